package client

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// restServer is a scripted REST-JSON management server: reply answers each request (decoded), and
// every request is recorded with its path.
type restServer struct {
	mu    sync.Mutex
	reqs  []restReq
	reply func(path string, req *discoveryv3.DiscoveryRequest) (int, *discoveryv3.DiscoveryResponse)
}

type restReq struct {
	path string
	req  *discoveryv3.DiscoveryRequest
}

func (s *restServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	req := &discoveryv3.DiscoveryRequest{}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || protojson.Unmarshal(b, req) != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, restReq{r.URL.Path, req})
	reply := s.reply
	s.mu.Unlock()
	code, resp := reply(r.URL.Path, req)
	if resp == nil {
		w.WriteHeader(code)
		return
	}
	out, _ := protojson.Marshal(resp)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(out)
}

func (s *restServer) requests() []restReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

func (s *restServer) setReply(f func(string, *discoveryv3.DiscoveryRequest) (int, *discoveryv3.DiscoveryResponse)) {
	s.mu.Lock()
	s.reply = f
	s.mu.Unlock()
}

func newREST(t *testing.T, s *restServer, st *stats.Store, fetchTimeout time.Duration) *REST {
	t.Helper()
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	r := NewREST(RESTConfig{
		Node: &corev3.Node{Id: "n1"}, HTTP: hs.Client(), BaseURL: hs.URL,
		RefreshDelay: 10 * time.Millisecond, InitialFetchTimeout: fetchTimeout,
		Stats: st, TypeStats: map[string]string{ClusterURL: "cluster_manager.cds"},
	})
	t.Cleanup(r.Close)
	return r
}

func restAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// updates collects a watcher's updates; fail makes it refuse the next one.
type updates struct {
	mu   sync.Mutex
	got  []Update
	fail error
}

func (u *updates) OnUpdate(_ string, up Update) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.got = append(u.got, up)
	err := u.fail
	u.fail = nil
	return err
}

func (u *updates) snapshot() []Update {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.got)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRESTWildcardACKAndRemoval(t *testing.T) {
	srv := &restServer{}
	var mu sync.Mutex
	version, clusters := "v1", []string{"a", "b"}
	srv.setReply(func(path string, req *discoveryv3.DiscoveryRequest) (int, *discoveryv3.DiscoveryResponse) {
		mu.Lock()
		defer mu.Unlock()
		if req.GetVersionInfo() == version {
			return http.StatusNotModified, nil
		}
		resp := &discoveryv3.DiscoveryResponse{VersionInfo: version, Nonce: "nonce-" + version, TypeUrl: ClusterURL}
		for _, c := range clusters {
			resp.Resources = append(resp.Resources, restAny(t, &clusterv3.Cluster{Name: c}))
		}
		return http.StatusOK, resp
	})
	st := stats.NewStore()
	r := newREST(t, srv, st, 0)
	w := &updates{}
	r.Watch(ClusterType, nil, w)
	waitFor(t, "the first update", func() bool { return len(w.snapshot()) == 1 })
	if u := w.snapshot()[0]; u.Version != "v1" || len(u.Resources) != 2 || u.Resources["a"].Msg == nil {
		t.Fatalf("first update = %+v", u)
	}
	// The next polls carry v1 (REST has no nonce), and the server answers 304: no update.
	waitFor(t, "an ACK", func() bool {
		for _, q := range srv.requests() {
			if q.req.GetVersionInfo() == "v1" && q.req.GetResponseNonce() == "" {
				return true
			}
		}
		return false
	})
	first := srv.requests()[0]
	if first.path != "/v3/discovery:clusters" || first.req.GetTypeUrl() != ClusterURL || first.req.GetVersionInfo() != "" ||
		len(first.req.GetResourceNames()) != 0 || first.req.GetNode().GetId() != "n1" || first.req.GetNode().GetUserAgentName() != "outrider" {
		t.Errorf("first request %s %v", first.path, first.req)
	}
	mu.Lock()
	version, clusters = "v2", []string{"b"}
	mu.Unlock()
	waitFor(t, "the second update", func() bool { return len(w.snapshot()) == 2 })
	u := w.snapshot()[1]
	if u.Version != "v2" || !slices.Equal(u.Removed, []string{"a"}) || len(u.Resources) != 1 {
		t.Errorf("second update = %+v, want b kept and a removed", u)
	}
	time.Sleep(50 * time.Millisecond) // more polls: all 304
	if n := len(w.snapshot()); n != 2 {
		t.Errorf("%d updates after 304s, want 2", n)
	}
	if got := st.Root().Counter("cluster_manager.cds.update_success").Value(); got != 2 {
		t.Errorf("update_success = %d, want 2", got)
	}
	if got := st.Root().Histogram("cluster_manager.cds.update_duration", stats.Milliseconds).Count(); got != 2 {
		t.Errorf("update_duration count = %d, want 2", got)
	}
}

func TestRESTRejectionKeepsVersion(t *testing.T) {
	srv := &restServer{}
	srv.setReply(func(_ string, req *discoveryv3.DiscoveryRequest) (int, *discoveryv3.DiscoveryResponse) {
		if req.GetVersionInfo() == "v1" {
			return http.StatusNotModified, nil
		}
		return http.StatusOK, &discoveryv3.DiscoveryResponse{VersionInfo: "v1", Nonce: "n", TypeUrl: ClusterURL,
			Resources: []*anypb.Any{restAny(t, &clusterv3.Cluster{Name: "c"})}}
	})
	st := stats.NewStore()
	r := newREST(t, srv, st, 0)
	w := &updates{fail: errors.New("cluster c is bad")} // refuses the first delivery only
	r.Watch(ClusterType, nil, w)
	// Envoy's REST subscription does not move version_info past a rejected response, so the server sends
	// v1 again, and the second delivery is accepted.
	waitFor(t, "v1 accepted", func() bool {
		q := srv.requests()
		return len(q) > 0 && q[len(q)-1].req.GetVersionInfo() == "v1"
	})
	reqs := srv.requests()
	if len(reqs) < 3 || reqs[1].req.GetVersionInfo() != "" {
		t.Fatalf("requests %v: the one after the rejection must keep the last good (empty) version", reqs)
	}
	for _, q := range reqs {
		if q.req.GetErrorDetail() != nil || q.req.GetResponseNonce() != "" {
			t.Errorf("request %v: REST sends neither error_detail nor a nonce", q.req)
		}
	}
	if n := len(w.snapshot()); n != 2 {
		t.Errorf("%d deliveries, want 2 (rejected, then accepted)", n)
	}
	if got := st.Root().Counter("cluster_manager.cds.update_rejected").Value(); got != 1 {
		t.Errorf("update_rejected = %d, want 1", got)
	}
	if got := st.Root().Counter("cluster_manager.cds.update_success").Value(); got != 1 {
		t.Errorf("update_success = %d, want 1", got)
	}
	if a := st.Root().Counter("cluster_manager.cds.update_attempt").Value(); a < uint64(len(reqs)) {
		t.Errorf("update_attempt = %d, want one per request (%d)", a, len(reqs))
	}
}

func TestRESTOnePollerPerName(t *testing.T) {
	srv := &restServer{}
	srv.setReply(func(_ string, req *discoveryv3.DiscoveryRequest) (int, *discoveryv3.DiscoveryResponse) {
		if req.GetVersionInfo() != "" {
			return http.StatusNotModified, nil
		}
		resp := &discoveryv3.DiscoveryResponse{VersionInfo: "1", Nonce: "n", TypeUrl: EndpointURL}
		for _, n := range []string{"x", "y", "z"} { // more than asked for: only the poller's name counts
			resp.Resources = append(resp.Resources, restAny(t, &endpointv3.ClusterLoadAssignment{ClusterName: n}))
		}
		return http.StatusOK, resp
	})
	r := newREST(t, srv, nil, 0)
	w := &updates{}
	r.Watch(EndpointType, []string{}, w)
	r.SetNames(EndpointType, []string{"x", "y"})
	waitFor(t, "x and y", func() bool { return len(w.snapshot()) == 2 })
	names := []string{}
	for _, u := range w.snapshot() {
		if len(u.Resources) != 1 {
			t.Errorf("update %+v: want exactly its poller's resource", u)
		}
		for n := range u.Resources {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"x", "y"}) {
		t.Errorf("updated %v, want x and y", names)
	}
	for _, q := range srv.requests() {
		if q.path != "/v3/discovery:endpoints" || len(q.req.GetResourceNames()) != 1 {
			t.Errorf("request %s %v: want one resource name per poll", q.path, q.req.GetResourceNames())
		}
	}
	r.SetNames(EndpointType, []string{"x"})
	time.Sleep(50 * time.Millisecond) // y's poller stops
	n := len(srv.requests())
	time.Sleep(100 * time.Millisecond)
	for _, q := range srv.requests()[n:] {
		if q.req.GetResourceNames()[0] != "x" {
			t.Errorf("polled %v after y was unsubscribed", q.req.GetResourceNames())
		}
	}
	if len(srv.requests()) == n {
		t.Error("x stopped polling too")
	}
}

func TestRESTInitialFetchTimeoutAndFailures(t *testing.T) {
	srv := &restServer{}
	srv.setReply(func(string, *discoveryv3.DiscoveryRequest) (int, *discoveryv3.DiscoveryResponse) {
		return http.StatusInternalServerError, nil
	})
	st := stats.NewStore()
	r := newREST(t, srv, st, 100*time.Millisecond)
	w := &updates{}
	r.Watch(ClusterType, nil, w)
	waitFor(t, "the initial fetch timeout", func() bool { return len(w.snapshot()) == 1 })
	if u := w.snapshot()[0]; !u.InitialFetchTimeout || len(u.Resources) != 0 {
		t.Errorf("update = %+v, want InitialFetchTimeout", u)
	}
	if st.Root().Counter("cluster_manager.cds.init_fetch_timeout").Value() != 1 {
		t.Error("init_fetch_timeout not counted")
	}
	waitFor(t, "update_failure", func() bool { return st.Root().Counter("cluster_manager.cds.update_failure").Value() > 0 })
}

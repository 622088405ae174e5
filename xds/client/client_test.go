package client

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFetchUpdateRemove(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			sc := cachev3.NewSnapshotCache(m.ads, cachev3.IDHash{}, nil)
			setSnapshot(t, sc, snapshot(t, "1", map[string][]types.Resource{
				ClusterURL: {cluster("a", time.Second), cluster("b", time.Second)}}))
			cp := newControlPlane(t, sc)
			c, st := newClient(t, m, cp, func(cfg *Config) {
				cfg.TypeStats = map[string]string{ClusterURL: "cluster_manager.cds"}
			})
			rec := newRecorder()
			c.Watch(ClusterType, nil, rec)

			u := rec.next(t)
			if got := names(u.Resources); !slices.Equal(got, []string{"a", "b"}) || len(u.Removed) > 0 {
				t.Fatalf("first update: resources %v removed %v", got, u.Removed)
			}
			if !m.delta && u.Version != "1" {
				t.Errorf("version %q, want 1", u.Version)
			}
			first := cp.waitRequest(ClusterURL, func(request) bool { return true })
			node := first.sotw.GetNode()
			if m.delta {
				node = first.delta.GetNode()
				if !slices.Equal(first.delta.GetResourceNamesSubscribe(), []string{"*"}) {
					t.Errorf("delta wildcard subscribe %v, want [*]", first.delta.GetResourceNamesSubscribe())
				}
			} else if len(first.sotw.GetResourceNames()) != 0 {
				t.Errorf("SotW wildcard names %v, want none", first.sotw.GetResourceNames())
			}
			if node.GetId() != nodeID || node.GetUserAgentName() != "outrider" || node.GetUserAgentBuildVersion() == nil {
				t.Errorf("node %v", node)
			}
			cp.waitRequest(ClusterURL, func(r request) bool { // the ACK
				if m.delta {
					return r.delta.GetResponseNonce() != "" && r.delta.GetErrorDetail() == nil
				}
				return r.sotw.GetVersionInfo() == "1" && r.sotw.GetResponseNonce() != "" && r.sotw.GetErrorDetail() == nil
			})
			if g := st.Gauge("control_plane.connected_state").Value(); g != 1 {
				t.Errorf("connected_state %d, want 1", g)
			}

			setSnapshot(t, sc, snapshot(t, "2", map[string][]types.Resource{
				ClusterURL: {cluster("a", 2*time.Second), cluster("c", time.Second)}}))
			u = rec.next(t)
			if got := names(u.Resources); !slices.Equal(got, []string{"a", "c"}) || !slices.Equal(u.Removed, []string{"b"}) {
				t.Fatalf("second update: resources %v removed %v", got, u.Removed)
			}
			if d := timeoutOf(t, u.Resources["a"]); d != 2*time.Second {
				t.Errorf("a's connect_timeout %v, want 2s", d)
			}
			// The counter follows the watcher's return: wait for it briefly.
			for deadline := time.Now().Add(2 * time.Second); st.Counter("cluster_manager.cds.update_success").Value() < 2 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if n := st.Counter("cluster_manager.cds.update_success").Value(); n != 2 {
				t.Errorf("update_success %d, want 2", n)
			}
			if n := st.Histogram("cluster_manager.cds.update_duration", stats.Milliseconds).Count(); n != 2 {
				t.Errorf("update_duration has %d values, want one per accepted update (2)", n)
			}
		})
	}
}

func TestNackKeepsLastGood(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			sc := cachev3.NewSnapshotCache(m.ads, cachev3.IDHash{}, nil)
			setSnapshot(t, sc, snapshot(t, "1", map[string][]types.Resource{ClusterURL: {cluster("a", time.Second)}}))
			cp := newControlPlane(t, sc)
			c, st := newClient(t, m, cp, func(cfg *Config) {
				cfg.TypeStats = map[string]string{ClusterURL: "cluster_manager.cds"}
			})
			rec := newRecorder()
			c.Watch(ClusterType, nil, rec)
			rec.next(t)

			// Invalid: connect_timeout must be > 0.
			setSnapshot(t, sc, snapshot(t, "2", map[string][]types.Resource{ClusterURL: {cluster("a", -time.Second)}}))
			nack := cp.waitRequest(ClusterURL, func(r request) bool {
				return r.sotw.GetErrorDetail() != nil || r.delta.GetErrorDetail() != nil
			})
			detail, version := nack.sotw.GetErrorDetail(), nack.sotw.GetVersionInfo()
			if m.delta {
				detail, version = nack.delta.GetErrorDetail(), "1"
			}
			if detail.GetCode() != 3 || !strings.Contains(detail.GetMessage(), `resource "a"`) ||
				!strings.Contains(detail.GetMessage(), "ConnectTimeout") {
				t.Errorf("error_detail %v", detail)
			}
			if version != "1" {
				t.Errorf("NACK version_info %q, want the last good 1", version)
			}
			rec.none(t, 100*time.Millisecond)
			// go-control-plane answers a NACK by sending the rejected version again, so count at least one.
			if n := st.Counter("cluster_manager.cds.update_rejected").Value(); n < 1 {
				t.Errorf("update_rejected %d, want at least 1", n)
			}

			// The applier refuses version 3; version 4 is fine again.
			rec.reject.Store(func(u Update) error {
				if u.Version == "3" || (m.delta && timeoutOf(t, u.Resources["a"]) == 3*time.Second) {
					return errors.New("cluster a: refused by the applier")
				}
				return nil
			})
			setSnapshot(t, sc, snapshot(t, "3", map[string][]types.Resource{ClusterURL: {cluster("a", 3*time.Second)}}))
			if u := rec.next(t); timeoutOf(t, u.Resources["a"]) != 3*time.Second {
				t.Fatalf("version 3 not delivered: %v", u)
			}
			nack = cp.waitRequest(ClusterURL, func(r request) bool {
				return strings.Contains(r.sotw.GetErrorDetail().GetMessage()+r.delta.GetErrorDetail().GetMessage(), "refused")
			})
			if !m.delta && nack.sotw.GetVersionInfo() != "1" {
				t.Errorf("NACK after applier refusal has version_info %q, want 1", nack.sotw.GetVersionInfo())
			}

			// A new watcher is told the last good state, not the refused one.
			late := newRecorder()
			c.Watch(ClusterType, nil, late)
			if u := late.next(t); timeoutOf(t, u.Resources["a"]) != time.Second {
				t.Errorf("late watcher got %v, want the last good connect_timeout 1s", u.Resources["a"].Msg)
			}

			setSnapshot(t, sc, snapshot(t, "4", map[string][]types.Resource{ClusterURL: {cluster("a", 4*time.Second)}}))
			for i := 0; ; i++ { // skip the resent version 3
				u := rec.next(t)
				if d := timeoutOf(t, u.Resources["a"]); d == 4*time.Second {
					break
				} else if d != 3*time.Second || i > 10000 {
					t.Fatalf("update %v while waiting for version 4", u)
				}
			}
			if !m.delta {
				cp.waitRequest(ClusterURL, func(r request) bool { return r.sotw.GetVersionInfo() == "4" })
			}
		})
	}
}

// linearCache serves EDS from a linear cache, muxed for ADS.
func linearCache(m mode, lc *cachev3.LinearCache) cachev3.Cache {
	if !m.ads {
		return lc
	}
	return &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cachev3.Cache{EndpointURL: lc},
	}
}

func TestSubscriptionChange(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			lc := cachev3.NewLinearCache(EndpointURL, cachev3.WithInitialResources(map[string]types.Resource{
				"a": cla("a", 0), "b": cla("b", 0), "c": cla("c", 0)}))
			cp := newControlPlane(t, linearCache(m, lc))
			c, _ := newClient(t, m, cp, nil)
			rec := newRecorder()
			c.Watch(EndpointType, []string{"a"}, rec)
			if got := names(rec.next(t).Resources); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("resources %v, want [a]", got)
			}

			c.SetNames(EndpointType, []string{"a", "b"})
			if got := names(rec.next(t).Resources); !slices.Contains(got, "b") || slices.Contains(got, "c") {
				t.Fatalf("after subscribing b: %v", got)
			}

			c.SetNames(EndpointType, []string{"b"})
			cp.waitRequest(EndpointURL, func(r request) bool {
				if m.delta {
					return slices.Equal(r.delta.GetResourceNamesUnsubscribe(), []string{"a"})
				}
				return slices.Equal(r.sotw.GetResourceNames(), []string{"b"})
			})
			if err := lc.UpdateResource("a", cla("a", 1)); err != nil {
				t.Fatal(err)
			}
			if err := lc.UpdateResource("b", cla("b", 1)); err != nil {
				t.Fatal(err)
			}
			u := rec.next(t)
			if got := names(u.Resources); !slices.Equal(got, []string{"b"}) {
				t.Fatalf("after unsubscribing a: %v", got)
			}
			if m.delta {
				if err := lc.DeleteResource("b"); err != nil {
					t.Fatal(err)
				}
				if u := rec.next(t); !slices.Equal(u.Removed, []string{"b"}) || len(u.Resources) > 0 {
					t.Fatalf("delta removal: %+v", u)
				}
			}
		})
	}
}

func TestReconnect(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			sc := cachev3.NewSnapshotCache(m.ads, cachev3.IDHash{}, nil)
			setSnapshot(t, sc, snapshot(t, "1", map[string][]types.Resource{ClusterURL: {cluster("a", time.Second)}}))
			cp := newControlPlane(t, sc)
			c, st := newClient(t, m, cp, func(cfg *Config) { cfg.SetNodeOnFirstMessageOnly = true })
			rec := newRecorder()
			c.Watch(ClusterType, nil, rec)
			rec.next(t)
			cp.waitRequest(ClusterURL, func(r request) bool {
				return r.sotw.GetResponseNonce() != "" || r.delta.GetResponseNonce() != ""
			})
			for _, r := range cp.requests()[1:] {
				if r.sotw.GetNode() != nil || r.delta.GetNode() != nil {
					t.Errorf("node sent after the first message: %v", r)
				}
			}

			cp.mu.Lock()
			cp.reqs = nil
			cp.mu.Unlock()
			cp.restart()
			first := cp.waitRequest(ClusterURL, func(request) bool { return true })
			if m.delta {
				if v := first.delta.GetInitialResourceVersions(); v["a"] == "" {
					t.Errorf("initial_resource_versions %v, want a's version", v)
				}
				if first.delta.GetNode().GetId() != nodeID {
					t.Error("no node on the first message of the new stream")
				}
			} else {
				if first.sotw.GetVersionInfo() != "1" || first.sotw.GetResponseNonce() != "" {
					t.Errorf("reconnect request version %q nonce %q, want 1 and none",
						first.sotw.GetVersionInfo(), first.sotw.GetResponseNonce())
				}
				if first.sotw.GetNode().GetId() != nodeID {
					t.Error("no node on the first message of the new stream")
				}
			}

			setSnapshot(t, sc, snapshot(t, "2", map[string][]types.Resource{ClusterURL: {cluster("a", 2*time.Second)}}))
			for u := rec.next(t); ; u = rec.next(t) {
				if r, ok := u.Resources["a"]; ok && timeoutOf(t, r) == 2*time.Second {
					break
				}
			}
			if g := st.Gauge("control_plane.connected_state").Value(); g != 1 {
				t.Errorf("connected_state %d after reconnect, want 1", g)
			}
		})
	}
}

func TestInitialFetchTimeoutWithControlPlaneDown(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			down := errors.New("control plane down")
			c, st := newClient(t, m, nil, func(cfg *Config) {
				cfg.Dial = func(context.Context) (grpc.ClientConnInterface, error) { return nil, down }
				cfg.InitialFetchTimeout = 50 * time.Millisecond
				cfg.TypeStats = map[string]string{ClusterURL: "cluster_manager.cds", EndpointURL: "cluster.x.eds"}
			})
			cds, eds := newRecorder(), newRecorder()
			c.Watch(ClusterType, nil, cds)
			c.Watch(EndpointType, []string{"x", "y"}, eds)
			if u := cds.next(t); !u.InitialFetchTimeout || len(u.Missing) != 0 {
				t.Errorf("CDS: %+v, want a wildcard initial fetch timeout", u)
			}
			if u := eds.next(t); !u.InitialFetchTimeout || !slices.Equal(u.Missing, []string{"x", "y"}) {
				t.Errorf("EDS: %+v, want missing [x y]", u)
			}
			c.SetNames(EndpointType, []string{"y", "z"})
			if u := eds.next(t); !slices.Equal(u.Missing, []string{"z"}) {
				t.Errorf("EDS after adding z: %+v, want missing [z]", u)
			}
			if n := st.Counter("cluster_manager.cds.init_fetch_timeout").Value(); n != 1 {
				t.Errorf("init_fetch_timeout %d, want 1", n)
			}
			if n := st.Counter("cluster_manager.cds.update_failure").Value(); n == 0 {
				t.Error("update_failure not counted")
			}
			if g := st.Gauge("control_plane.connected_state").Value(); g != 0 {
				t.Errorf("connected_state %d, want 0", g)
			}
		})
	}
}

func TestInitialFetchTimeoutEndsOnResponse(t *testing.T) {
	m := modes[0]
	sc := cachev3.NewSnapshotCache(m.ads, cachev3.IDHash{}, nil)
	setSnapshot(t, sc, snapshot(t, "1", map[string][]types.Resource{ClusterURL: {cluster("a", time.Second)}}))
	cp := newControlPlane(t, sc)
	c, _ := newClient(t, m, cp, func(cfg *Config) { cfg.InitialFetchTimeout = 100 * time.Millisecond })
	rec := newRecorder()
	c.Watch(ClusterType, nil, rec)
	if u := rec.next(t); u.InitialFetchTimeout || len(u.Resources) != 1 {
		t.Fatalf("first update %+v", u)
	}
	rec.none(t, 300*time.Millisecond)
}

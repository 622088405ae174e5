package server_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// inplaceChain is a filter chain named name for connections from source
// address src (a /32), whose connection manager answers every request with
// body.
func inplaceChain(t *testing.T, name, src, body string) *listenerv3.FilterChain {
	t.Helper()
	router, _ := anypb.New(&routerv3.Router{})
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "inplace_" + name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "r_" + name, VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: []*routev3.Route{direct(body)}}}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.FilterChain{
		Name:             name,
		FilterChainMatch: &listenerv3.FilterChainMatch{SourcePrefixRanges: []*corev3.CidrRange{{AddressPrefix: src, PrefixLen: wrapperspb.UInt32(32)}}},
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}},
	}
}

// inplaceResources is xdsResources' cluster and endpoints with the listener
// "inplace" on port instead, with chain "a" (from 127.0.0.1) answering
// bodyA and chain "b" (from 127.0.0.2) answering bodyB; edit, when not nil,
// changes the listener further.
func inplaceResources(t *testing.T, port, upPort int, bodyA, bodyB string, edit func(*listenerv3.Listener)) map[resourcev3.Type][]types.Resource {
	res := xdsResources(t, port, upPort, direct("unused"))
	l := res[resourcev3.ListenerType][0].(*listenerv3.Listener)
	l.Name = "inplace"
	l.FilterChains = []*listenerv3.FilterChain{inplaceChain(t, "a", "127.0.0.1", bodyA), inplaceChain(t, "b", "127.0.0.2", bodyB)}
	if edit != nil {
		edit(l)
	}
	delete(res, resourcev3.RouteType)
	return res
}

// keepAlive is one HTTP/1.1 keep-alive client connection from a chosen
// loopback source address (kernel-picked port).
type keepAlive struct {
	c  net.Conn
	br *bufio.Reader
}

func dialFrom(t *testing.T, src string, port int) *keepAlive {
	t.Helper()
	k, err := tryDialFrom(src, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.c.Close() })
	return k
}

func tryDialFrom(src string, port int) (*keepAlive, error) {
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("dial from %s: %w", src, err)
	}
	return &keepAlive{c: c, br: bufio.NewReader(c)}, nil
}

// get sends one request and reads its response: the body, whether the
// response carries "Connection: close", or an error when the connection
// was closed instead.
func (k *keepAlive) get() (body string, closing bool, err error) {
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(k.c, "GET / HTTP/1.1\r\nHost: inplace\r\n\r\n"); err != nil {
		return "", false, err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return "", false, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b), resp.Close, err
}

// mustServe asserts the connection answers want and stays open.
func (k *keepAlive) mustServe(t *testing.T, what, want string) {
	t.Helper()
	body, closing, err := k.get()
	if err != nil || body != want || closing {
		t.Fatalf("%s: body %q, Connection: close %v, err %v; want %q on a kept connection", what, body, closing, err, want)
	}
}

// mustDrain asserts the connection drains: it is closed, or its next
// response carries "Connection: close" and the proxy closes it after.
func (k *keepAlive) mustDrain(t *testing.T, what string) {
	t.Helper()
	body, closing, err := k.get()
	if err == nil && !closing {
		t.Fatalf("%s: answered %q without Connection: close on a draining connection", what, body)
	}
	_ = k.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := k.br.Read(make([]byte, 1)); err == nil {
		t.Fatalf("%s: the drained connection is still open (read %d bytes)", what, n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("%s: the drained connection was not closed within 5 s", what)
	}
}

// newConnGets is what a new connection from src is answered.
func newConnGets(src string, port int) func() string {
	return func() string {
		k, err := tryDialFrom(src, port)
		if err != nil {
			return err.Error()
		}
		defer k.c.Close()
		body, _, err := k.get()
		if err != nil {
			return err.Error()
		}
		return body
	}
}

// listenerDump is the dynamic listener "inplace" of /config_dump: which of
// active, warming and draining states it has, and the active state's JSON.
func listenerDump(t *testing.T, p *servertest.Proxy) (states []string, activeJSON string) {
	t.Helper()
	_, body := p.Admin("GET", "/config_dump")
	var dump struct {
		Configs []struct {
			Type      string `json:"@type"`
			Listeners []struct {
				Name     string           `json:"name"`
				Active   *json.RawMessage `json:"active_state"`
				Warming  *json.RawMessage `json:"warming_state"`
				Draining *json.RawMessage `json:"draining_state"`
			} `json:"dynamic_listeners"`
		} `json:"configs"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("config_dump: %v", err)
	}
	for _, c := range dump.Configs {
		for _, l := range c.Listeners {
			if l.Name != "inplace" {
				continue
			}
			if l.Active != nil {
				states = append(states, "active")
				activeJSON = string(*l.Active)
			}
			if l.Warming != nil {
				states = append(states, "warming")
			}
			if l.Draining != nil {
				states = append(states, "draining")
			}
		}
	}
	return states, activeJSON
}

// Envoy's filter chain only update: a listener whose filter chains alone
// change is updated in place. A connection on an unchanged chain keeps
// working (no Connection: close, not closed after the drain time) and is
// counted by the new listener, one on the changed chain drains, new
// connections get the new chain, and a carried-over connection drains when
// a later update changes its chain.
// The changed chain drains at once under either drain strategy, as Envoy's
// filter chain drain does.
func TestListenerInPlaceFilterChainUpdate(t *testing.T) {
	for _, tc := range []struct {
		apiType   string
		immediate bool
	}{{"GRPC", true}, {"DELTA_GRPC", false}} {
		t.Run(fmt.Sprintf("%s/immediate=%v", tc.apiType, tc.immediate), func(t *testing.T) {
			testInPlaceUpdate(t, tc.apiType, tc.immediate)
		})
	}
}

func testInPlaceUpdate(t *testing.T, apiType string, immediate bool) {
	cp := startControlPlane(t)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	port := servertest.DeadPort(t)
	cp.set(t, "1", inplaceResources(t, port, up.port(), "a1", "b1", nil))
	p := servertest.StartOpts(t, xdsBootstrap(cp.port, apiType), server.Options{DrainTime: 2 * time.Second, DrainImmediate: immediate})
	eventually(t, "chain a", newConnGets("127.0.0.1", port), "a1")
	eventually(t, "chain b", newConnGets("127.0.0.2", port), "b1")

	onA, onB := dialFrom(t, "127.0.0.1", port), dialFrom(t, "127.0.0.2", port)
	onA.mustServe(t, "a before the update", "a1")
	onB.mustServe(t, "b before the update", "b1")
	active := fmt.Sprintf("listener.127.0.0.1_%d.downstream_cx_active", port)
	p.WaitStat(active, 2)

	// Only chain b changes.
	updated := time.Now()
	cp.set(t, "2", inplaceResources(t, port, up.port(), "a1", "b2", nil))
	eventually(t, "new connections on the changed chain", newConnGets("127.0.0.2", port), "b2")
	p.WaitStat("listener_manager.listener_in_place_updated", 1)
	if got := p.Stat("listener_manager.total_listeners_draining"); got != 0 {
		t.Errorf("total_listeners_draining = %d after an in-place update, want 0", got)
	}
	if states, active := listenerDump(t, p); strings.Join(states, ",") != "active" || !strings.Contains(active, `"b2"`) {
		t.Errorf("config_dump: states %v, active %s; want only the active state, with chain b's new config", states, active)
	}
	onA.mustServe(t, "a right after the update", "a1")
	onB.mustDrain(t, "b after its chain changed")
	if got := newConnGets("127.0.0.1", port)(); got != "a1" {
		t.Errorf("a new connection on the unchanged chain got %q", got)
	}

	// Past the drain time (2 s) and the idle grace (1 s), chain a's
	// connection is still served, and counted once.
	p.WaitStat("listener_manager.total_filter_chains_draining", 0)
	time.Sleep(time.Until(updated.Add(3500 * time.Millisecond)))
	onA.mustServe(t, "a after the drain time", "a1")
	p.WaitStat(active, 1)

	// A second in-place update changes chain a: the carried-over
	// connection drains now.
	cp.set(t, "3", inplaceResources(t, port, up.port(), "a3", "b2", nil))
	eventually(t, "new connections on chain a", newConnGets("127.0.0.1", port), "a3")
	p.WaitStat("listener_manager.listener_in_place_updated", 2)
	onA.mustDrain(t, "a carried over, after its chain changed")
	p.WaitStat(active, 0)
	p.WaitStat("listener_manager.total_filter_chains_draining", 0)
	if got := p.Stat("listener_manager.listener_modified"); got != 2 {
		t.Errorf("listener_modified = %d, want 2", got)
	}
	if got := p.Stat("listener_manager.listener_added"); got != 1 {
		t.Errorf("listener_added = %d, want 1", got)
	}
}

// Any change besides the filter chains (listener filters, the buffer limit,
// socket options) is a full update: every connection drains, chains
// unchanged or not, and listener_in_place_updated stays 0.
func TestListenerFullUpdateDrainsAll(t *testing.T) {
	inspector, _ := anypb.New(&tlsinspectorv3.TlsInspector{})
	for _, tc := range []struct {
		name string
		edit func(*listenerv3.Listener)
	}{
		{"listener_filters", func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector",
				ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector}}}
		}},
		{"per_connection_buffer_limit_bytes", func(l *listenerv3.Listener) {
			l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(64 << 10)
		}},
		{"socket_options", func(l *listenerv3.Listener) {
			// SO_KEEPALIVE (SOL_SOCKET 1, SO_KEEPALIVE 9) on the listen socket.
			l.SocketOptions = []*corev3.SocketOption{{Level: 1, Name: 9,
				Value: &corev3.SocketOption_IntValue{IntValue: 1}, State: corev3.SocketOption_STATE_LISTENING}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := startControlPlane(t)
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
			port := servertest.DeadPort(t)
			cp.set(t, "1", inplaceResources(t, port, up.port(), "a1", "b1", nil))
			p := servertest.Start(t, xdsBootstrap(cp.port, "GRPC"))
			eventually(t, "chain a", newConnGets("127.0.0.1", port), "a1")
			onA, onB := dialFrom(t, "127.0.0.1", port), dialFrom(t, "127.0.0.2", port)
			onA.mustServe(t, "a before the update", "a1")
			onB.mustServe(t, "b before the update", "b1")

			// Chain b changes too, so that the update is visible to new
			// connections; chain a does not, and drains all the same.
			cp.set(t, "2", inplaceResources(t, port, up.port(), "a1", "b2", tc.edit))
			eventually(t, "the update", newConnGets("127.0.0.2", port), "b2")
			p.WaitStat("listener_manager.listener_modified", 1)
			if got := p.Stat("listener_manager.listener_in_place_updated"); got != 0 {
				t.Errorf("listener_in_place_updated = %d for a full update", got)
			}
			if got := p.Stat("listener_manager.listener_added"); got != 1 {
				t.Errorf("listener_added = %d after one add and one modification, want 1", got)
			}
			onA.mustDrain(t, "a (unchanged chain) in a full update")
			onB.mustDrain(t, "b in a full update")
			if got := newConnGets("127.0.0.1", port)(); got != "a1" {
				t.Errorf("a new connection on chain a got %q", got)
			}
		})
	}
}

// rawH2From is dialRawH2 from source address src.
func rawH2From(t *testing.T, src string, port int) *rawH2 {
	t.Helper()
	k := dialFrom(t, src, port)
	_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawH2{t: t, c: k.c, fr: http2.NewFramer(k.c, k.c)}
	r.enc = hpack.NewEncoder(&r.hbuf)
	if _, err := io.WriteString(k.c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return r
}

// answered reads frames until the response headers of stream id, failing
// on a GOAWAY before them.
func (r *rawH2) answered(what string, id uint32) {
	r.t.Helper()
	r.next(what, func(f http2.Frame) bool {
		if isGoAway(f) {
			r.t.Fatalf("%s: GOAWAY on a connection whose chain did not change", what)
		}
		h, ok := f.(*http2.HeadersFrame)
		return ok && h.StreamID == id
	})
}

// Over HTTP/2 the changed chain's connection gets GOAWAY; the unchanged
// chain's does not and goes on serving new streams.
func TestListenerInPlaceUpdateH2(t *testing.T) {
	cp := startControlPlane(t)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	port := servertest.DeadPort(t)
	cp.set(t, "1", inplaceResources(t, port, up.port(), "a1", "b1", nil))
	servertest.Start(t, xdsBootstrap(cp.port, "GRPC"))
	eventually(t, "chain b", newConnGets("127.0.0.2", port), "b1")
	onA, onB := rawH2From(t, "127.0.0.1", port), rawH2From(t, "127.0.0.2", port)
	onA.get(1, "inplace", "/")
	onA.answered("a before the update", 1)
	onB.get(1, "inplace", "/")
	onB.answered("b before the update", 1)

	cp.set(t, "2", inplaceResources(t, port, up.port(), "a1", "b2", nil))
	eventually(t, "the update", newConnGets("127.0.0.2", port), "b2")
	onB.next("GOAWAY on the changed chain", isGoAway)
	onA.get(3, "inplace", "/")
	onA.answered("a after the update", 3)
}

package listener

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/drain"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// echoFilter answers each line with its config's string and the line; it
// records the drain manager it was built with and whether it was closed.
type echoFilter struct {
	prefix string
	drain  *drain.Manager
	closed atomic.Bool
}

func (f *echoFilter) ServeConn(c *netfilter.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, f.prefix+":"+line); err != nil {
			return
		}
	}
}

func (f *echoFilter) Close() error { f.closed.Store(true); return nil }

var (
	echoMu      sync.Mutex
	echoFilters = map[string][]*echoFilter{} // by prefix, in build order
)

func init() {
	netfilter.Registry.Register("outrider.test.echo", []string{"type.googleapis.com/google.protobuf.StringValue"},
		func(ctx *netfilter.Context, cfg *anypb.Any) (any, error) {
			var s wrapperspb.StringValue
			if err := cfg.UnmarshalTo(&s); err != nil {
				return nil, err
			}
			f := &echoFilter{prefix: s.GetValue(), drain: ctx.Drain}
			echoMu.Lock()
			echoFilters[f.prefix] = append(echoFilters[f.prefix], f)
			echoMu.Unlock()
			return f, nil
		})
}

// echoChain is a chain named name for connections from src/32 echoing with
// prefix.
func echoChain(name, src, prefix string) *listenerv3.FilterChain {
	cfg, _ := anypb.New(wrapperspb.String(prefix))
	return &listenerv3.FilterChain{
		Name:             name,
		FilterChainMatch: &listenerv3.FilterChainMatch{SourcePrefixRanges: []*corev3.CidrRange{{AddressPrefix: src, PrefixLen: wrapperspb.UInt32(32)}}},
		Filters:          []*listenerv3.Filter{{Name: "outrider.test.echo", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}}},
	}
}

func echoListener(a, b string) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name: "echo",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}},
		FilterChains: []*listenerv3.FilterChain{echoChain("a", "127.0.0.1", a), echoChain("b", "127.0.0.2", b)},
	}
}

func testContext() *netfilter.Context {
	return &netfilter.Context{Stats: stats.NewStore(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), DrainTime: 2 * time.Second}
}

func TestSupportsInPlaceUpdate(t *testing.T) {
	ctx, ids := testContext(), &atomic.Uint64{}
	old, err := Build(echoListener("sa1", "sb1"), ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	unbound, err := Build(echoListener("sa1", "sb1"), ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	defer unbound.Close()
	if err := old.Bind(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer old.StopAccepting()
	edit := func(f func(*listenerv3.Listener)) *listenerv3.Listener {
		p := echoListener("sa1", "sb1")
		f(p)
		return p
	}
	for _, tc := range []struct {
		name string
		l    *Listener
		p    *listenerv3.Listener
		want bool
	}{
		{"a chain changed", old, echoListener("sa1", "sb2"), true},
		{"a chain renamed", old, edit(func(p *listenerv3.Listener) { p.FilterChains[1].Name = "b2" }), true},
		{"a chain added", old, edit(func(p *listenerv3.Listener) {
			p.FilterChains = append(p.FilterChains, echoChain("c", "127.0.0.3", "sc"))
		}), true},
		{"a default chain added", old, edit(func(p *listenerv3.Listener) { p.DefaultFilterChain = echoChain("d", "127.0.0.4", "sd") }), true},
		{"no filter chains left", old, edit(func(p *listenerv3.Listener) {
			p.DefaultFilterChain, p.FilterChains = p.FilterChains[0], nil
		}), false},
		{"address", old, edit(func(p *listenerv3.Listener) { p.Address.GetSocketAddress().Address = "127.0.0.2" }), false},
		{"buffer limit", old, edit(func(p *listenerv3.Listener) { p.PerConnectionBufferLimitBytes = wrapperspb.UInt32(1024) }), false},
		{"listener filters timeout", old, edit(func(p *listenerv3.Listener) { p.ContinueOnListenerFiltersTimeout = true }), false},
		{"origin not in service", unbound, echoListener("sa1", "sb2"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.l.SupportsInPlaceUpdate(tc.p); got != tc.want {
				t.Errorf("SupportsInPlaceUpdate = %v, want %v", got, tc.want)
			}
		})
	}
	var none *Listener
	if none.SupportsInPlaceUpdate(echoListener("sa1", "sb2")) {
		t.Error("a nil origin supports an in-place update")
	}
	old.StartDrain()
	if old.SupportsInPlaceUpdate(echoListener("sa1", "sb2")) {
		t.Error("a draining origin supports an in-place update")
	}
}

// echoConn is a client connection from src to addr.
type echoConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialEcho(t *testing.T, src string, addr net.Addr) *echoConn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &echoConn{c: c, br: bufio.NewReader(c)}
}

// say sends a line and returns the answer, or the error.
func (e *echoConn) say(line string) (string, error) {
	_ = e.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(e.c, line+"\n"); err != nil {
		return "", err
	}
	s, err := e.br.ReadString('\n')
	if len(s) > 0 {
		s = s[:len(s)-1]
	}
	return s, err
}

func TestUpdateInPlaceKeepsUnchangedChains(t *testing.T) {
	ctx, ids := testContext(), &atomic.Uint64{}
	old, err := Build(echoListener("ua1", "ub1"), ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Bind(context.Background()); err != nil {
		t.Fatal(err)
	}
	go old.Serve()
	onA, onB := dialEcho(t, "127.0.0.1", old.Addr()), dialEcho(t, "127.0.0.2", old.Addr())
	for _, tc := range []struct {
		c    *echoConn
		want string
	}{{onA, "ua1:x"}, {onB, "ub1:x"}} {
		if got, err := tc.c.say("x"); got != tc.want {
			t.Fatalf("before the update: %q (%v), want %q", got, err, tc.want)
		}
	}

	p := echoListener("ua1", "ub2")
	l, err := BuildInPlace(p, ctx, ids, old)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.StopAccepting(); l.CloseAll(); l.Wait() })
	if l.chains[0] != old.chains[0] || l.chains[1] == old.chains[1] {
		t.Fatal("BuildInPlace did not share exactly the unchanged chain")
	}
	echoMu.Lock()
	builtA, builtB := len(echoFilters["ua1"]), len(echoFilters["ub1"])
	echoMu.Unlock()
	if builtA != 1 || builtB != 1 {
		t.Fatalf("filters built: ua1 %d times, ub1 %d times; want each once", builtA, builtB)
	}
	if n := l.UpdateInPlace(old); n != 1 {
		t.Fatalf("UpdateInPlace: %d chains draining, want 1", n)
	}
	go l.Serve()
	if got := []int{old.ActiveConns(), l.ActiveConns(), l.ConnsOnChain("a"), old.ConnsOnChain("b")}; got[0] != 1 || got[1] != 1 || got[2] != 1 || got[3] != 1 {
		t.Fatalf("connections old %d, new %d, new on a %d, old on b %d; want 1 each", got[0], got[1], got[2], got[3])
	}
	echoMu.Lock()
	fa, fb := echoFilters["ua1"][0], echoFilters["ub1"][0]
	echoMu.Unlock()
	if fa.drain.Draining() || !fb.drain.ShouldClose() {
		t.Fatalf("draining: unchanged chain %v, changed chain closes %v; want false, true", fa.drain.Draining(), fb.drain.ShouldClose())
	}
	if got, err := dialEcho(t, "127.0.0.2", old.Addr()).say("y"); got != "ub2:y" {
		t.Fatalf("a new connection got %q (%v), want the new chain", got, err)
	}

	// The end of old's drain closes its connections and its chains only.
	old.CloseAll()
	old.Wait()
	old.Close()
	if _, err := onB.say("z"); err == nil {
		t.Error("the changed chain's connection is open after its drain")
	}
	if got, err := onA.say("z"); got != "ua1:z" {
		t.Errorf("the unchanged chain's connection after old's drain: %q (%v)", got, err)
	}
	if fa.closed.Load() || !fb.closed.Load() {
		t.Errorf("closed: shared chain %v, dropped chain %v; want false, true", fa.closed.Load(), fb.closed.Load())
	}

	// The new listener's own drain reaches the carried-over chain.
	l.StartDrain()
	if !fa.drain.Draining() {
		t.Error("the new listener's drain does not drain the carried-over chain")
	}
	l.Close()
	if !fa.closed.Load() {
		t.Error("the new listener does not close the chain it took over")
	}
}

// A connection that reaches the old listener after an in-place update (the
// accept loop loaded the owner just before) is matched against the new
// listener's chains and counted by it.
func TestSettleMovesLateConnections(t *testing.T) {
	ctx, ids := testContext(), &atomic.Uint64{}
	old, err := Build(echoListener("la1", "lb1"), ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	mid, err := BuildInPlace(echoListener("la1", "lb2"), ctx, ids, old)
	if err != nil {
		t.Fatal(err)
	}
	mid.UpdateInPlace(old)
	l, err := BuildInPlace(echoListener("la3", "lb2"), ctx, ids, mid)
	if err != nil {
		t.Fatal(err)
	}
	l.UpdateInPlace(mid)
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	tr := &tracked{conn: c1}
	tr.owner.Store(old)
	old.mu.Lock()
	old.conns[tr] = struct{}{}
	old.wg.Add(1)
	old.mu.Unlock()
	owner := settle(tr, tr.lockOwner())
	owner.mu.Unlock()
	if owner != l || tr.owner.Load() != l || old.ActiveConns() != 0 || mid.ActiveConns() != 0 || l.ActiveConns() != 1 {
		t.Fatalf("settled on %p (new %p); conns old %d, mid %d, new %d", owner, l, old.ActiveConns(), mid.ActiveConns(), l.ActiveConns())
	}
	l.untrack(tr)
	old.Wait() // the moved connection is no longer old's to wait for
	mid.Wait()
	l.Wait()
}

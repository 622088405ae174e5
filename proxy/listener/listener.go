// Package listener turns an Envoy Listener into a bound socket and an accept
// loop: each accepted connection gets its own goroutine, runs the listener
// filters, is matched to a filter chain and handed to that chain's network
// filters. A Listener is immutable once built; a config update builds a new one
// and drains the old, or, when only filter chains changed, builds one that
// shares the unchanged chains and their connections (inplace.go).
package listener

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/drain"
	"github.com/outrider-proxy/outrider/proxy/filterchain"
	"github.com/outrider-proxy/outrider/proxy/listenerfilter"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/proxy/sockopt"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/transport"
	"github.com/outrider-proxy/outrider/telemetry/accesslog"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// chain is a compiled filter chain. An in-place listener update shares it
// between the old and the new listener; owner is the one that closes it.
type chain struct {
	name      string
	proto     *listenerv3.FilterChain
	key       string         // proto, marshalled deterministically: finds it again in an update
	drain     *drain.Manager // the chain's filters drain by it; never nil
	owner     atomic.Pointer[Listener]
	transport transport.Downstream // nil: raw bytes
	// handshakeTimeout is transport_socket_connect_timeout; 0 means none.
	handshakeTimeout time.Duration
	middles          []netfilter.Middle
	terminal         netfilter.Terminal
}

// Listener is one compiled listener. Build it, Bind it, then Serve.
type Listener struct {
	Name    string
	Proto   *listenerv3.Listener
	network string
	address string
	opts    sockopt.ListenOptions

	listenerFilters []listenerfilter.Filter
	// bindToPort is false for bind_to_port: false: no socket of its own,
	// connections only come handed over. useOriginalDst hands connections
	// whose original destination is another listener's to that listener,
	// found in handoff (nil: none is).
	bindToPort     bool
	useOriginalDst bool
	handoff        *Table
	matcher        *filterchain.Matcher
	chains         []*chain
	defaultChain   *chain
	bufferLimit    int
	// filtersTimeout is listener_filters_timeout (Envoy's default 15s; 0
	// disables it); continueOnTimeout is continue_on_listener_filters_timeout.
	filtersTimeout    time.Duration
	continueOnTimeout bool
	accessLogs        *accesslog.Set // listener access_log: one entry per connection
	log               *slog.Logger
	st                listenerStats

	sock   *socket // nil before Bind or TakeOver
	nextID *atomic.Uint64
	// drain is started by StartDrain (Draining); the chains' own managers
	// are what their connections drain by.
	drain *drain.Manager
	// drainGradual and drainTime make each new chain's drain manager
	// (--drain-strategy, --drain-time-s).
	drainGradual bool
	drainTime    time.Duration

	mu    sync.Mutex
	conns map[*tracked]struct{}
	wg    sync.WaitGroup
	// successor is the listener that replaced l in place (UpdateInPlace);
	// nil while l is not replaced so.
	successor atomic.Pointer[Listener]
}

type listenerStats struct {
	cxTotal, cxDestroy, noChain, preCxTimeout *stats.Counter
	cxActive                                  *stats.Gauge
	cxLength                                  *stats.Histogram
}

// tracked is an open connection, with since when it waits idle for a
// request (Unix nanoseconds; 0 while a request is in progress). owner is
// the listener that counts it (an in-place update moves it to the new
// listener), chain the filter chain it was matched to (nil before).
type tracked struct {
	conn      net.Conn
	idleSince atomic.Int64
	owner     atomic.Pointer[Listener]
	chain     atomic.Pointer[chain]
}

// lockOwner returns t's owner with its mu held: an in-place update may move
// t while the caller waits for the lock.
func (t *tracked) lockOwner() *Listener {
	for {
		l := t.owner.Load()
		l.mu.Lock()
		if t.owner.Load() == l {
			return l
		}
		l.mu.Unlock()
	}
}

// Build compiles a listener. Errors name the field path inside the listener.
func Build(p *listenerv3.Listener, ctx *netfilter.Context, ids *atomic.Uint64) (*Listener, error) {
	return build(p, ctx, ids, nil)
}

// build compiles p; a filter chain equal to one of origin's (nil: none) is
// origin's compiled chain, shared.
func build(p *listenerv3.Listener, ctx *netfilter.Context, ids *atomic.Uint64, origin *Listener) (_ *Listener, err error) {
	if err := confcheck.Fields(p, "", "name", "address", "filter_chains", "default_filter_chain",
		"per_connection_buffer_limit_bytes", "listener_filters", "enable_reuse_port", "reuse_port",
		"tcp_backlog_size", "socket_options", "freebind", "transparent", "stat_prefix", "traffic_direction",
		"metadata", "drain_type", "listener_filters_timeout", "continue_on_listener_filters_timeout",
		"ignore_global_conn_limit", "bind_to_port", "enable_mptcp", "max_connections_to_accept_per_socket_event",
		"access_log", "use_original_dst"); err != nil {
		return nil, err
	}
	network, address, err := sockopt.AddrFromProto(p.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	l := &Listener{
		Name: p.GetName(), Proto: p, network: network, address: address,
		opts:         sockopt.OptionsFromListener(p),
		bufferLimit:  1 << 20,
		log:          ctx.Log,
		nextID:       ids,
		conns:        map[*tracked]struct{}{},
		bindToPort:   p.GetBindToPort() == nil || p.GetBindToPort().GetValue(),
		drainGradual: ctx.DrainGradual, drainTime: ctx.DrainTime,
	}
	l.useOriginalDst = p.GetUseOriginalDst().GetValue()
	if l.Name == "" {
		l.Name = address
	}
	defer func() {
		if err != nil {
			l.Close() // release what the chains built so far hold (RDS watches, log files)
		}
	}()
	if l.accessLogs, err = accesslog.Compile(p.GetAccessLog(), accesslog.Options{Stats: ctx.Stats, Log: ctx.Log, Clusters: ctx.Clusters}); err != nil {
		return nil, err
	}
	l.filtersTimeout, l.continueOnTimeout = 15*time.Second, p.GetContinueOnListenerFiltersTimeout()
	if d := p.GetListenerFiltersTimeout(); d != nil {
		l.filtersTimeout = d.AsDuration()
	}
	if n := p.GetPerConnectionBufferLimitBytes(); n != nil {
		l.bufferLimit = int(n.GetValue())
	}
	prefix := p.GetStatPrefix()
	if prefix == "" {
		prefix = strings.ReplaceAll(address, ":", "_")
	}
	scope := ctx.Stats.Scope("listener." + prefix)
	if l.useOriginalDst {
		// As Envoy, use_original_dst implies an original_dst listener filter first.
		f, err := listenerfilter.Registry.Lookup(originalDstFilter, "")
		if err != nil {
			return nil, fmt.Errorf("use_original_dst: %w", err)
		}
		inst, err := f(nil, scope)
		if err != nil {
			return nil, fmt.Errorf("use_original_dst: %w", err)
		}
		l.listenerFilters = append(l.listenerFilters, inst)
	}
	for i, lf := range p.GetListenerFilters() {
		f, err := listenerfilter.Registry.Lookup(lf.GetName(), lf.GetTypedConfig().GetTypeUrl())
		if err != nil {
			return nil, fmt.Errorf("listener_filters[%d]: %w", i, err)
		}
		inst, err := f(lf.GetTypedConfig(), scope)
		if err != nil {
			return nil, fmt.Errorf("listener_filters[%d] (%s): %w", i, lf.GetName(), err)
		}
		l.listenerFilters = append(l.listenerFilters, inst)
	}
	if l.matcher, err = filterchain.Compile(p.GetFilterChains(), p.GetDefaultFilterChain()); err != nil {
		return nil, fmt.Errorf("filter_chains: %w", err)
	}
	tctx := &transport.Context{Stats: ctx.Stats, Scope: scope, Log: ctx.Log, Secrets: ctx.Secrets}
	fctx := *ctx
	fctx.ListenerName = l.Name
	fctx.TrafficDirection = p.GetTrafficDirection()
	l.drain = &drain.Manager{Gradual: ctx.DrainGradual, Time: ctx.DrainTime}
	var reuse map[string]*chain
	if origin != nil {
		reuse = origin.chainsByKey()
	}
	for i, fc := range p.GetFilterChains() {
		c, err := l.chainFor(fc, reuse, &fctx, tctx)
		if err != nil {
			return nil, fmt.Errorf("filter_chains[%d]%s: %w", i, chainLabel(fc.GetName()), err)
		}
		l.chains = append(l.chains, c)
	}
	if dc := p.GetDefaultFilterChain(); dc != nil {
		var reuseDefault map[string]*chain
		if origin != nil && origin.defaultChain != nil {
			reuseDefault = map[string]*chain{origin.defaultChain.key: origin.defaultChain}
		}
		if l.defaultChain, err = l.chainFor(dc, reuseDefault, &fctx, tctx); err != nil {
			return nil, fmt.Errorf("default_filter_chain: %w", err)
		}
	}
	s := scope
	l.st = listenerStats{
		cxTotal:   s.Counter("downstream_cx_total"),
		cxDestroy: s.Counter("downstream_cx_destroy"),
		noChain:   s.Counter("no_filter_chain_match"),
		cxActive:  s.Gauge("downstream_cx_active"),
		cxLength:  s.Histogram("downstream_cx_length_ms", stats.Milliseconds),
	}
	s.Counter("downstream_cx_overflow")
	l.st.preCxTimeout = s.Counter("downstream_pre_cx_timeout")
	s.Gauge("downstream_pre_cx_active")
	return l, nil
}

func chainLabel(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" (%s)", name)
}

func buildChain(fc *listenerv3.FilterChain, ctx *netfilter.Context, tctx *transport.Context) (*chain, error) {
	if len(fc.GetFilters()) == 0 {
		return nil, fmt.Errorf("filters: a filter chain needs at least one network filter")
	}
	c := &chain{name: fc.GetName(), handshakeTimeout: fc.GetTransportSocketConnectTimeout().AsDuration()}
	if ts := fc.GetTransportSocket(); ts != nil {
		f, err := transport.Registry.Lookup(ts.GetName(), ts.GetTypedConfig().GetTypeUrl())
		if err != nil {
			return nil, fmt.Errorf("transport_socket: %w", err)
		}
		if f.Downstream == nil {
			return nil, fmt.Errorf("transport_socket: %q cannot serve downstream connections", ts.GetName())
		}
		if c.transport, err = f.Downstream(tctx, ts.GetTypedConfig()); err != nil {
			return nil, fmt.Errorf("transport_socket (%s): %w", ts.GetName(), err)
		}
	}
	for i, f := range fc.GetFilters() {
		if f.GetConfigDiscovery() != nil {
			return nil, fmt.Errorf("filters[%d].config_discovery: not supported by outrider yet", i)
		}
		factory, err := netfilter.Registry.Lookup(f.GetName(), f.GetTypedConfig().GetTypeUrl())
		if err != nil {
			return nil, fmt.Errorf("filters[%d]: %w", i, err)
		}
		inst, err := factory(ctx, f.GetTypedConfig())
		if err != nil {
			return nil, fmt.Errorf("filters[%d] (%s): %w", i, f.GetName(), err)
		}
		last := i == len(fc.GetFilters())-1
		switch v := inst.(type) {
		case netfilter.Terminal:
			if !last {
				return nil, fmt.Errorf("filters[%d]: terminal filter %q must be the last filter of the chain", i, f.GetName())
			}
			c.terminal = v
		case netfilter.Middle:
			if last {
				return nil, fmt.Errorf("filters[%d]: non-terminal filter %q is the last filter of the chain", i, f.GetName())
			}
			c.middles = append(c.middles, v)
		default:
			return nil, fmt.Errorf("filters[%d]: %q is neither terminal nor a middle filter", i, f.GetName())
		}
	}
	return c, nil
}

// originalDstFilter is the listener filter use_original_dst implies.
const originalDstFilter = "envoy.filters.listener.original_dst"

// Bind opens the listening socket; it does nothing for a bind_to_port:
// false listener.
func (l *Listener) Bind(ctx context.Context) error {
	if !l.bindToPort {
		return nil
	}
	ln, err := sockopt.Listen(ctx, l.network, l.address, l.opts)
	if err != nil {
		return fmt.Errorf("listener %q: %w", l.Name, err)
	}
	l.sock = &socket{ln: ln}
	l.sock.owner.Store(l)
	return nil
}

// Addr is the bound address; nil before Bind. A bind_to_port: false
// listener's is its configured address.
func (l *Listener) Addr() net.Addr {
	if !l.bindToPort {
		return l.configuredAddr()
	}
	if l.sock == nil {
		return nil
	}
	return l.sock.ln.Addr()
}

// Serve accepts until StopAccepting. On a socket taken over from another
// listener whose accept loop runs already, it returns at once: that loop
// hands connections to l from now on.
func (l *Listener) Serve() {
	if l.sock == nil || l.sock.serving.Swap(true) {
		return
	}
	l.sock.serve()
}

// serveConn tracks c and runs it on its own goroutine.
func (l *Listener) serveConn(c net.Conn) {
	t := &tracked{conn: c}
	t.owner.Store(l)
	l.mu.Lock()
	l.conns[t] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	go l.handle(t)
}

// handle runs one connection to its end. Its frame is kept small (the
// setup lives in accept) because it stays on the goroutine's stack while the
// connection idles between requests: a shallow idle stack is what lets the
// runtime shrink the goroutine's stack.
func (l *Listener) handle(t *tracked) {
	start := time.Now()
	info := l.connInfo(t.conn, start)
	l.serve(t, t.conn, info, start, true)
}

// serve runs the listener filters on c (t.conn, or what earlier listener
// filters made of it), hands the connection over to the listener of its
// original destination when mayHandOff, and otherwise runs it to its end.
func (l *Listener) serve(t *tracked, c net.Conn, info *streaminfo.Conn, start time.Time, mayHandOff bool) {
	c, ok := l.runListenerFilters(c, info)
	if ok && mayHandOff {
		if to := l.handoffTarget(info); to != nil {
			l.untrack(t)
			to.adopt(t.conn, c, info, start)
			return
		}
	}
	l.st.cxTotal.Inc()
	l.st.cxActive.Inc()
	defer l.finish(t, info, start)
	if !ok {
		return
	}
	nc, terminal, wrapped := l.accept(t, c, info)
	if wrapped != nil {
		defer wrapped.Close()
	}
	if terminal != nil {
		terminal.ServeConn(nc)
	}
}

// connInfo describes the accepted connection c.
func (l *Listener) connInfo(c net.Conn, start time.Time) *streaminfo.Conn {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	info := &streaminfo.Conn{
		ID:                l.nextID.Add(1),
		LocalAddr:         addrPort(c.LocalAddr()),
		RemoteAddr:        addrPort(c.RemoteAddr()),
		StartTime:         start,
		ListenerName:      l.Name,
		TransportProtocol: "raw_buffer",
	}
	info.DirectRemoteAddr = info.RemoteAddr
	return info
}

// finish closes the connection, writes the access log of the listener that
// owns it now (l, or the one an in-place update moved it to) and records its
// end.
func (l *Listener) finish(t *tracked, info *streaminfo.Conn, start time.Time) {
	l = t.owner.Load()
	if l.accessLogs != nil {
		si := &streaminfo.Stream{Conn: info, StartTime: start}
		si.LastDownstreamTxByte = si.Since(time.Now())
		l.accessLogs.Log(&formatter.Context{Stream: si})
	}
	_ = t.conn.Close()
	l.st.cxActive.Dec()
	l.st.cxDestroy.Inc()
	l.st.cxLength.Record(uint64(time.Since(start).Milliseconds()))
	l.untrack(t)
}

// untrack makes t's owner forget t, which ended or was handed over to
// another listener.
func (l *Listener) untrack(t *tracked) {
	l = t.lockOwner()
	delete(l.conns, t)
	l.mu.Unlock()
	l.wg.Done()
}

// runListenerFilters runs the listener filters on c under
// listener_filters_timeout. It returns the connection as they left it, and
// false when the connection is to be closed.
func (l *Listener) runListenerFilters(c net.Conn, info *streaminfo.Conn) (net.Conn, bool) {
	if len(l.listenerFilters) > 0 && l.filtersTimeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(l.filtersTimeout))
	}
	for _, f := range l.listenerFilters {
		if err := f.OnAccept(&c, info); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				l.st.preCxTimeout.Inc()
				if l.continueOnTimeout {
					break // Envoy's continue_on_listener_filters_timeout: go on with what is known
				}
			}
			l.log.Debug("listener filter closed connection", "listener", l.Name, "err", err)
			if !errors.Is(err, os.ErrDeadlineExceeded) || !l.continueOnTimeout {
				return c, false
			}
		}
	}
	if len(l.listenerFilters) > 0 && l.filtersTimeout > 0 {
		_ = c.SetReadDeadline(time.Time{})
	}
	return c, true
}

// accept picks the filter chain, runs its transport socket handshake and
// its non-terminal network filters. It returns the connection for the
// chain's terminal filter, nil terminal when the connection is to be
// closed, and the transport-wrapped connection to close at the end (nil
// when none).
func (l *Listener) accept(t *tracked, c net.Conn, info *streaminfo.Conn) (_ *netfilter.Conn, _ netfilter.Terminal, wrapped net.Conn) {
	// The chain comes from the listener owning t now: one that an in-place
	// update moved t to before it was matched has the current chains.
	owner := settle(t, t.lockOwner())
	ch := owner.pick(info)
	t.chain.Store(ch)
	owner.mu.Unlock()
	if ch == nil {
		l.st.noChain.Inc()
		return nil, nil, nil
	}
	info.FilterChainName = ch.name
	if ch.transport != nil {
		ctx := context.Background()
		if ch.handshakeTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, ch.handshakeTimeout)
			defer cancel()
		}
		var err error
		if wrapped, err = ch.transport.Wrap(ctx, c, info); err != nil {
			l.log.Debug("transport socket handshake failed", "listener", l.Name, "remote", info.RemoteAddr, "err", err)
			return nil, nil, nil
		}
		c = wrapped
	}
	nc := &netfilter.Conn{Conn: c, Info: info, BufferLimit: l.bufferLimit, Idle: func(idle bool) {
		if idle {
			t.idleSince.Store(time.Now().UnixNano())
		} else {
			t.idleSince.Store(0)
		}
	}}
	for _, m := range ch.middles {
		if err := m.OnConnection(nc); err != nil {
			l.log.Debug("network filter closed connection", "listener", l.Name, "err", err)
			return nil, nil, wrapped
		}
	}
	return nc, ch.terminal, wrapped
}

func (l *Listener) pick(info *streaminfo.Conn) *chain {
	ci := filterchain.ConnInfo{
		DstAddr:           info.LocalAddr,
		SrcAddr:           info.RemoteAddr,
		ServerName:        info.RequestedServerName,
		TransportProtocol: info.TransportProtocol,
		ALPN:              info.ALPN,
	}
	switch i := l.matcher.Match(&ci); {
	case i >= 0:
		return l.chains[i]
	case i == filterchain.DefaultChain:
		return l.defaultChain
	}
	return nil
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}

// StopAccepting closes the listening socket, unless another listener has
// taken it over; open connections go on.
func (l *Listener) StopAccepting() {
	if l.sock != nil && l.sock.owner.Load() == l {
		_ = l.sock.ln.Close()
	}
}

// ActiveConns is the number of open connections.
func (l *Listener) ActiveConns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Close releases what the listener's filters hold (access log files);
// call it after every connection has ended. Chains an in-place update
// handed to a newer listener are that listener's to close.
func (l *Listener) Close() {
	closeAll := func(c *chain) {
		if c == nil || !c.owner.CompareAndSwap(l, nil) {
			return
		}
		for _, m := range c.middles {
			if cl, ok := m.(io.Closer); ok {
				_ = cl.Close()
			}
		}
		if cl, ok := c.terminal.(io.Closer); ok {
			_ = cl.Close()
		}
	}
	for _, c := range l.chains {
		closeAll(c)
	}
	closeAll(l.defaultChain)
	_ = l.accessLogs.Close()
}

// Wait blocks until every connection has ended.
func (l *Listener) Wait() { l.wg.Wait() }

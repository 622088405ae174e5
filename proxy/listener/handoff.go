package listener

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// Table finds the listener a connection redirected to the proxy belongs to
// (Envoy's "listener connection handoff" for use_original_dst). The server
// keeps it current with Set whenever its active listeners change; a nil
// *Table finds nothing.
type Table struct {
	byAddr atomic.Pointer[map[netip.AddrPort]*Listener]
}

// Set replaces the listeners the table knows. Listeners on a non-IP address
// are left out; when two share an address the first wins.
func (t *Table) Set(ls []*Listener) {
	m := make(map[netip.AddrPort]*Listener, len(ls))
	for _, l := range ls {
		if l.network != "tcp" {
			continue
		}
		ap, err := netip.ParseAddrPort(l.address)
		if err != nil {
			continue
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if _, dup := m[ap]; !dup {
			m[ap] = l
		}
	}
	t.byAddr.Store(&m)
}

// Lookup is the listener for original destination dst, as Envoy's
// getBalancedHandlerByAddress: the listener on exactly dst, else the one on
// the wildcard address of dst's family (0.0.0.0:port or [::]:port); nil when
// there is none.
func (t *Table) Lookup(dst netip.AddrPort) *Listener {
	if t == nil {
		return nil
	}
	mp := t.byAddr.Load()
	if mp == nil {
		return nil
	}
	m := *mp
	a := dst.Addr().Unmap()
	if l := m[netip.AddrPortFrom(a, dst.Port())]; l != nil {
		return l
	}
	wild := netip.IPv4Unspecified()
	if a.Is6() {
		wild = netip.IPv6Unspecified()
	}
	return m[netip.AddrPortFrom(wild, dst.Port())]
}

// UseHandoff gives l the table it hands redirected connections over with
// (use_original_dst); call it before Serve. Without it l keeps them.
func (l *Listener) UseHandoff(t *Table) { l.handoff = t }

// BindsToPort is false for a bind_to_port: false listener, which only gets
// connections handed over by a use_original_dst listener.
func (l *Listener) BindsToPort() bool { return l.bindToPort }

// configuredAddr is the listener's address from its config.
func (l *Listener) configuredAddr() net.Addr {
	if l.network != "tcp" {
		return &net.UnixAddr{Name: l.address, Net: "unix"}
	}
	ap, err := netip.ParseAddrPort(l.address)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}

// handoffTarget is the listener a connection goes to after l's listener
// filters, as Envoy's use_original_dst: when an original destination was
// restored and a listener other than l is found for it; nil keeps it on l.
func (l *Listener) handoffTarget(info *streaminfo.Conn) *Listener {
	if !l.useOriginalDst || !info.LocalAddrRestored {
		return nil
	}
	if to := l.handoff.Lookup(info.LocalAddr); to != l {
		return to
	}
	return nil
}

// adopt takes over a connection another listener handed over: raw is the
// socket, c what that listener's filters made of it. Its own listener
// filters run again, as in Envoy, but it is not handed over a second time.
func (l *Listener) adopt(raw, c net.Conn, info *streaminfo.Conn, start time.Time) {
	t := &tracked{conn: raw}
	t.owner.Store(l)
	l.mu.Lock()
	l.conns[t] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	info.ListenerName = l.Name
	l.serve(t, c, info, start, false)
}

package hcm

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/netcopy"
)

// checkUpgrade decides whether the request is an allowed upgrade, as Envoy's
// connection manager does: an HTTP/1 Upgrade (websocket...), a CONNECT
// (upgrade type "CONNECT"), or an HTTP/2 extended CONNECT (RFC 8441), which
// is first rewritten into its HTTP/1 form (GET, Upgrade: <:protocol>,
// Connection: upgrade) when http2_protocol_options.allow_connect is set. An
// upgrade is allowed when upgrade_configs enables its type, on the
// connection manager or, overriding it, on the route. A refused one is
// 403 upgrade_failed.
func (s *stream) checkUpgrade(h *headers.Map) (bool, *requestError) {
	if _, ok := s.ds.(*h2Stream); ok {
		if rerr := s.extendedConnect(h); rerr != nil {
			return false, rerr
		}
	}
	var t string
	switch {
	case s.msg.Upgrade:
		v, _ := h.Get("upgrade")
		t = string(v)
	case string(mustGet(h, headers.Method)) == http.MethodConnect:
		t = "CONNECT"
	default:
		return false, nil
	}
	allowed, configured := s.cfg.upgrades[strings.ToLower(t)]
	if r := s.Route(); r != nil {
		for _, u := range r.UpgradeConfigs() { // a route may turn an upgrade on or off
			if strings.EqualFold(u.GetUpgradeType(), t) {
				allowed, configured = u.GetEnabled() == nil || u.GetEnabled().GetValue(), true
			}
		}
	}
	s.ClearRouteCache() // the route is chosen again once the path is final
	if !configured || !allowed {
		return false, &requestError{403, "upgrade_failed"}
	}
	s.cfg.stats.cxUpgradesTotal.Inc()
	return true, nil
}

// errTunnelClosed is what a write to an HTTP/2 tunnel returns once its
// stream has ended.
var errTunnelClosed = errors.New("hcm: HTTP/2 tunnel stream ended")

// h2Tunnel is the downstream end of a tunnel (CONNECT, or an upgrade over
// extended CONNECT) on an HTTP/2 stream, as the router sees it: Write sends
// DATA frames, CloseWrite ends the stream (its next body read reports the
// end, so the stream finishes and sends END_STREAM; the client's direction
// is then closed too). The other net.Conn methods apply to the connection,
// except deadlines, which are ignored.
type h2Tunnel struct {
	net.Conn
	hs *h2Stream

	mu     sync.Mutex
	closed bool          // the stream ended: no more writes to its ResponseWriter
	done   chan struct{} // closed with closed
	sent   uint64        // bytes written, under mu
}

// Done is closed when the stream has ended, so the filter can stop the
// upstream side of a tunnel whose client went away.
func (t *h2Tunnel) Done() <-chan struct{} { return t.done }

func (t *h2Tunnel) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, errTunnelClosed
	}
	if err := t.hs.writeData(p, false); err != nil {
		return 0, err
	}
	t.sent += uint64(len(p))
	return len(p), nil
}

// CloseWrite makes the stream's next body read report the end, so the
// stream finishes. After the stream ended it does nothing: the pooled
// h2Stream may already serve another stream.
func (t *h2Tunnel) CloseWrite() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errTunnelClosed
	}
	return t.hs.endTunnelRead()
}

func (t *h2Tunnel) Close() error                     { return t.CloseWrite() }
func (t *h2Tunnel) Read([]byte) (int, error)         { return 0, errTunnelClosed }
func (t *h2Tunnel) SetDeadline(time.Time) error      { return nil }
func (t *h2Tunnel) SetReadDeadline(time.Time) error  { return nil }
func (t *h2Tunnel) SetWriteDeadline(time.Time) error { return nil }

// shutdown stops writes, once the stream is over (the pooled h2Stream may
// serve another stream next), and reports the bytes sent through the tunnel.
func (t *h2Tunnel) shutdown() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		close(t.done)
	}
	return t.sent
}

// h2TunnelFor starts the tunnel of an HTTP/2 stream whose response headers
// were sent.
func (s *stream) h2TunnelFor(hs *h2Stream) net.Conn {
	if hs.flush() != nil {
		return nil
	}
	s.tunnel = &h2Tunnel{Conn: s.nc.Conn, hs: hs, done: make(chan struct{})}
	return s.tunnel
}

// endTunnel stops an HTTP/2 tunnel's writes when its stream finishes, and
// tells the filter that either kind of tunnel is over.
// The bytes the tunnel sent to the client count in BytesSent.
func (s *stream) endTunnel() {
	if s.tunnel != nil {
		s.info.BytesSent += s.tunnel.shutdown()
		s.tunnel = nil
	}
	if s.h1tunnel != nil {
		close(s.h1tunnel.done)
		s.info.BytesSent += s.h1tunnel.sent.Load()
		s.h1tunnel = nil
	}
}

// h1Tunnel is the downstream end of a tunnel on an HTTP/1 connection: the
// connection itself, plus Done, closed when the stream has ended (the
// connection then closes), so the filter can stop the upstream side.
type h1Tunnel struct {
	net.Conn
	done chan struct{}
	sent atomic.Uint64 // bytes written
}

func (t *h1Tunnel) Write(p []byte) (int, error) {
	n, err := t.Conn.Write(p)
	t.sent.Add(uint64(n))
	return n, err
}

func (t *h1Tunnel) Done() <-chan struct{} { return t.done }

// CloseWrite half-closes the connection (Conn may not say it can).
func (t *h1Tunnel) CloseWrite() error {
	netcopy.CloseWrite(t.Conn)
	return nil
}

// tunnelResponse reports whether h answers the stream's upgrade (101) or
// CONNECT (2xx) and so starts a tunnel: the connection then closes with it,
// but the answer carries no "Connection: close".
func (s *stream) tunnelResponse(h *headers.Map) bool {
	code := h.StatusCode()
	if code == 101 {
		return s.msg.Upgrade
	}
	return code >= 200 && code < 300 && string(mustGet(&s.req, headers.Method)) == http.MethodConnect
}

// extConnectStatus is the status an extended CONNECT stream answers with:
// the upstream's 101 becomes 200, as RFC 8441 and Envoy's codec have it.
func (s *stream) extConnectStatus(h *headers.Map) {
	if s.extConnect && h.StatusCode() == 101 {
		h.SetInt(headers.Status, 200)
	}
}

package hcm

import (
	"net"
	"sync"
	"syscall"
	"time"
)

// An HTTP/1 client that closes its connection while its request waits for
// the upstream's response: Envoy sees the close at once and resets the
// upstream request. Here the connection's goroutine is blocked on the
// upstream, so the terminal filter arms a watch (WatchClose) while it
// waits. To cost nothing on fast responses, the watch starts only after
// closeWatchDelay (a timer reused across the connection's requests); it
// then peeks at the socket from a helper goroutine: end of file or a reset
// means the client left, and the filter's function runs.

// closeWatchDelay is how long a response may take before the client's
// socket is watched.
const closeWatchDelay = 200 * time.Millisecond

// closeWatch is an HTTP/1 connection's watch state.
type closeWatch struct {
	mu    sync.Mutex
	fn    func() // nil: disarmed
	gen   uint64 // bumped by each arm and disarm
	timer *time.Timer
}

// WatchClose arms (fn non-nil) or disarms (nil) the watch for a client
// closing its connection while the stream waits for its response; fn runs
// at most once, on another goroutine. It does nothing on HTTP/2, whose
// resets come through DownstreamContext.
func (s *stream) WatchClose(fn func()) {
	c, ok := s.ds.(*conn)
	if !ok {
		return
	}
	w := &c.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fn = fn
	w.gen++
	switch {
	case fn == nil:
		if w.timer != nil {
			w.timer.Stop()
		}
	case w.timer == nil:
		w.timer = time.AfterFunc(closeWatchDelay, c.startCloseWatch)
	default:
		w.timer.Reset(closeWatchDelay)
	}
}

// armed returns the watch's function while generation gen is in force.
func (w *closeWatch) armed(gen uint64) func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gen != gen {
		return nil
	}
	return w.fn
}

// startCloseWatch peeks at the client's socket until it is readable: a
// closed or reset connection runs the armed function.
func (c *conn) startCloseWatch() {
	w := &c.watch
	w.mu.Lock()
	fn, gen := w.fn, w.gen
	w.mu.Unlock()
	if fn == nil {
		return
	}
	tc, ok := c.nc.Conn.(*net.TCPConn)
	if !ok {
		return // TLS or another wrapper: no peeking under it
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	go func() {
		gone := false
		// The read callback runs when the socket is readable; it blocks the
		// connection's own reads meanwhile, which only happen after the
		// response, when the next request's bytes make it readable anyway.
		_ = rc.Read(func(fd uintptr) bool {
			if w.armed(gen) == nil {
				return true // the response came: stop watching
			}
			var b [1]byte
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if err == syscall.EAGAIN || err == syscall.EINTR {
				return false
			}
			gone = n == 0 || err != nil
			return true
		})
		if gone {
			if fn := w.armed(gen); fn != nil {
				fn()
			}
		}
	}()
}

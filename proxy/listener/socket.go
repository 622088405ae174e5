package listener

import (
	"errors"
	"net"
	"reflect"
	"sync/atomic"
	"time"
)

// socket is a bound listening socket and its one accept loop, which hands
// each accepted connection to the socket's current owner. A changed
// listener on the same address takes the socket over (TakeOver), as Envoy's
// listener update reuses the listen socket: connections already in the
// kernel's accept queue are not lost to a close, and no second socket
// competes for new ones.
type socket struct {
	ln      net.Listener
	owner   atomic.Pointer[Listener]
	serving atomic.Bool // the accept loop has started
}

// serve runs the accept loop until the socket is closed. Temporary accept
// errors back off.
func (s *socket) serve() {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l := s.owner.Load()
			l.log.Warn("accept failed", "listener", l.Name, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.owner.Load().serveConn(c)
	}
}

// TakeOver makes l accept on old's socket from now on, when both listen on
// the same address with the same socket options; old then stops accepting
// without closing the socket. It reports false (and changes nothing) when
// the socket cannot be shared; the caller binds l instead.
func (l *Listener) TakeOver(old *Listener) bool {
	if old == nil || old.sock == nil || l.sock != nil || l.network != old.network || l.address != old.address ||
		!reflect.DeepEqual(l.opts, old.opts) || old.sock.owner.Load() != old {
		return false
	}
	l.sock = old.sock
	l.sock.owner.Store(l)
	return true
}

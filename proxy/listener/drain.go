package listener

import "time"

// drainIdleGrace is how long a connection must have been idle before a
// drain closes it. A connection in use gets "Connection: close" (or GOAWAY)
// on its next response instead, so that the drain does not close a socket a
// client is about to send a request on, a request it could not know to
// retry.
const drainIdleGrace = time.Second

// StartDrain begins the listener's drain: responses start to carry
// "Connection: close", and connections idle between requests (for at least
// drainIdleGrace) are closed,
// all at once (immediate) or spread over the drain time (gradual). It does
// not stop accepting.
func (l *Listener) StartDrain() {
	if l.drain.Draining() {
		return
	}
	l.drain.Start()
	for _, c := range l.allChains() {
		c.drain.Start()
	}
	l.closeIdleFor(l.drainTime)
}

// closeIdleFor closes idle connections on draining chains now and every
// 50 ms for d.
func (l *Listener) closeIdleFor(d time.Duration) {
	l.closeIdle()
	go func() {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			time.Sleep(50 * time.Millisecond)
			l.closeIdle()
		}
	}()
}

// Draining reports whether StartDrain was called.
func (l *Listener) Draining() bool { return l.drain.Draining() }

// closeIdle closes the idle connections whose chain's drain picks them now.
func (l *Listener) closeIdle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now().UnixNano()
	for t := range l.conns {
		ch := t.chain.Load()
		if since := t.idleSince.Load(); ch != nil && since != 0 && now-since >= int64(drainIdleGrace) && ch.drain.ShouldClose() {
			_ = t.conn.Close()
		}
	}
}

// CloseAll closes every connection, at the end of a drain.
func (l *Listener) CloseAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for t := range l.conns {
		_ = t.conn.Close()
	}
}

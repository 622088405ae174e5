package h2

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outrider-proxy/outrider/proxy/buffer"
)

// streamCore is what a stream of either side keeps: its flow-control
// windows and the waits on them, the pooled receive buffer, and the end
// and failure state. Its fields are guarded by the connection's mutex;
// core is nil while the pooled stream is not in use.
type streamCore struct {
	core  *connCore
	corep atomic.Pointer[connCore] // core, for the deadline timer
	id    uint32
	cond  sync.Cond // L is core.mu

	inMap         bool
	localEnded    bool // END_STREAM sent
	remoteEnded   bool // END_STREAM received
	err           error
	contentLength int64 // declared body content-length; -1: none
	received      int64 // body bytes received
	recvWindow    int32
	recvUnacked   int32
	sendWindow    int64
	rx            *buffer.Slice // received body bytes not handed out: rx.Bytes()[:rxN]
	rxN           int
	held          *buffer.Slice // the bytes ReadData returned last
	done          chan struct{}
	doneClosed    bool
	writeWaiting  bool
	writeDeadline time.Time
	timer         *time.Timer // wakes waits with a deadline; nil until one is needed
	timerAt       time.Time
}

// bind attaches the stream to c for a new use with id.
func (s *streamCore) bind(c *connCore, id uint32) {
	s.core, s.id = c, id
	s.corep.Store(c)
	s.cond.L = &c.mu
	s.contentLength = -1
	s.recvWindow = int32(c.streamWindow)
	s.sendWindow = int64(c.peerWindow)
}

// writableLocked is the error a write gets now (ended once END_STREAM was
// sent); nil: it may go ahead.
func (s *streamCore) writableLocked(ended error) error {
	switch {
	case s.err != nil:
		return s.err
	case s.localEnded:
		return ended
	}
	return nil
}

// sendDataLocked queues p as DATA frames, waiting for the peer's
// flow-control windows and for room in the write buffer, at most until the
// write deadline. endSent says the last frame carried END_STREAM (when end):
// the caller records it. A write after END_STREAM fails with ended.
func (s *streamCore) sendDataLocked(p []byte, end bool, ended error) (endSent bool, err error) {
	c := s.core
	for {
		if err := s.writableLocked(ended); err != nil {
			return false, err
		}
		if len(p) == 0 {
			if end {
				c.wbuf = appendFrameHeader(c.wbuf, 0, frameData, flagEndStream, s.id)
			}
			return end, nil
		}
		avail := min(s.sendWindow, c.sendWindow, int64(c.peerMaxFrame))
		if avail <= 0 || len(c.wbuf) >= writeHighWater {
			if len(c.wbuf) > 0 && !c.flushing {
				// What is queued goes before waiting on the peer; the
				// lock was released meanwhile, so look again.
				c.flushLocked()
				continue
			}
			if err := s.waitWriteLocked(); err != nil {
				return false, err
			}
			continue
		}
		n := int(min(int64(len(p)), avail))
		last := end && n == len(p)
		var flags byte
		if last {
			flags = flagEndStream
		}
		c.wbuf = appendFrame(c.wbuf, frameData, flags, s.id, p[:n])
		s.sendWindow -= int64(n)
		c.sendWindow -= int64(n)
		p = p[n:]
		if last {
			return true, nil
		}
	}
}

func (s *streamCore) waitWriteLocked() error {
	c := s.core
	s.writeWaiting = true
	c.writeWait++
	err := s.waitLocked(s.writeDeadline)
	c.writeWait--
	s.writeWaiting = false
	return err
}

// waitLocked waits on the stream's condition, at most until deadline.
func (s *streamCore) waitLocked(deadline time.Time) error {
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		if s.timer == nil {
			s.timer = time.AfterFunc(d, s.wake)
		} else if !s.timerAt.Equal(deadline) {
			s.timer.Reset(d)
		}
		s.timerAt = deadline
	}
	s.cond.Wait()
	return nil
}

// wake is the deadline timer: it wakes the stream's waiters, whichever
// connection the (pooled) stream is on now.
func (s *streamCore) wake() {
	c := s.corep.Load()
	if c == nil {
		return
	}
	c.mu.Lock()
	if s.corep.Load() == c {
		s.cond.Broadcast()
	}
	c.mu.Unlock()
}

// takeRxLocked hands out the received body bytes (valid until the next
// call) and gives them back to both flow-control windows.
func (s *streamCore) takeRxLocked() []byte {
	c := s.core
	n := s.rxN
	s.held, s.rx, s.rxN = s.rx, s.held, 0
	s.creditLocked(int32(n))
	c.creditConnLocked(int64(n))
	c.flushLocked()
	return s.held.Bytes()[:n]
}

// creditLocked gives n bytes of the stream's window back, in batches of half
// the window.
func (s *streamCore) creditLocked(n int32) {
	if s.remoteEnded || s.err != nil {
		return
	}
	c := s.core
	s.recvUnacked += n
	if s.recvUnacked >= int32(c.streamWindow/2) {
		c.wbuf = appendWindowUpdate(c.wbuf, s.id, uint32(s.recvUnacked))
		s.recvWindow += s.recvUnacked
		s.recvUnacked = 0
	}
}

// appendRxLocked buffers received body bytes (read loop).
func (s *streamCore) appendRxLocked(p []byte) {
	need := s.rxN + len(p)
	if s.rx == nil || need > s.rx.Cap() {
		n := max(need, s.core.rxMin)
		if s.rx != nil {
			n = max(n, 2*s.rx.Cap())
		}
		ns := buffer.Get(n)
		if s.rx != nil {
			copy(ns.Bytes(), s.rx.Bytes()[:s.rxN])
			s.rx.Release()
		}
		s.rx = ns
	}
	copy(s.rx.Bytes()[s.rxN:], p)
	s.rxN = need
}

// closeDoneLocked closes the Done channel if one was handed out.
func (s *streamCore) closeDoneLocked() {
	if s.done != nil && !s.doneClosed {
		close(s.done)
		s.doneClosed = true
	}
}

// releaseBuffersLocked gives the receive buffers back; credit says the unread
// bytes go back to the connection window.
func (s *streamCore) releaseBuffersLocked(credit bool) {
	if s.rx != nil {
		if credit {
			s.core.creditConnLocked(int64(s.rxN))
		}
		s.rx.Release()
		s.rx, s.rxN = nil, 0
	}
	if s.held != nil {
		s.held.Release()
		s.held = nil
	}
}

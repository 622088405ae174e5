package h2

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// StreamError is what a stream's calls return once it was reset.
type StreamError struct {
	Code   http2.ErrCode
	Remote bool // the client sent the RST_STREAM; false: this side did
}

func (e *StreamError) Error() string {
	if e.Remote {
		return "h2: stream reset by the client: " + e.Code.String()
	}
	return "h2: stream reset: " + e.Code.String()
}

// errEnded is returned by a write after the response ended.
var errEnded = errors.New("h2: response already ended")

// closedChan is Done's answer for a stream that already ended badly.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Stream is one request/response exchange. Streams are pooled: a Stream and
// everything it returned are valid only until its ServeStream returns. Its
// methods are for the handler's goroutine (Done and Reset from any).
type Stream struct {
	streamCore
	c        *Conn
	req      headers.Map
	trailers headers.Map

	// Guarded by c.mu.
	headersSent bool // final (non-1xx) response headers sent
	interrupted bool // Interrupt was called: reads fail from now on

	// The context's state (ctx.go), under its own lock: stop functions of
	// AfterFunc may come from any goroutine, even after the stream ended.
	ctxMu       sync.Mutex
	ctxGen      uint64         // bumped by each use of the pooled stream
	ctxCanceled bool           // the stream failed: the context is done
	afterFuncs  []Watcher      // registered by Watch or AfterFunc, not stopped yet (nil entries are stopped)
	ctxWG       sync.WaitGroup // AfterFunc functions running
}

var streamPool = sync.Pool{New: func() any { return new(Stream) }}

// getStream takes a pooled stream for id (read loop).
func getStream(c *Conn, id uint32) *Stream {
	s := streamPool.Get().(*Stream)
	s.c = c
	s.bind(&c.connCore, id)
	s.req.Reset()
	s.trailers.Reset()
	return s
}

func putStream(s *Stream) {
	s.c, s.core = nil, nil
	s.corep.Store(nil)
	s.inMap, s.remoteEnded, s.localEnded, s.headersSent = false, false, false, false
	s.err = nil
	s.received, s.recvUnacked, s.rxN = 0, 0, 0
	s.writeWaiting, s.interrupted = false, false
	s.ctxMu.Lock()
	s.ctxGen++
	s.ctxCanceled = false
	clear(s.afterFuncs)
	s.afterFuncs = s.afterFuncs[:0]
	s.ctxMu.Unlock()
	s.writeDeadline = time.Time{}
	if s.doneClosed {
		s.done, s.doneClosed = nil, false
	}
	streamPool.Put(s)
}

// ID is the stream id.
func (s *Stream) ID() uint32 { return s.id }

// Conn is the stream's connection.
func (s *Stream) Conn() *Conn { return s.c }

// Request is the request's header list: pseudo-headers first, lower-case
// names, cookie crumbs joined with "; ". The handler may change it.
func (s *Stream) Request() *headers.Map { return &s.req }

// Trailers are the request trailers, complete once ReadData returned
// io.EOF; empty when there were none.
func (s *Stream) Trailers() *headers.Map { return &s.trailers }

// Done is closed when the stream is reset (by either side) or the
// connection ends; a stream that ends normally leaves it open.
func (s *Stream) Done() <-chan struct{} {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.done == nil {
		if s.err != nil {
			return closedChan
		}
		s.done = make(chan struct{})
	}
	return s.done
}

// Err is why the stream failed (a *StreamError or ErrConnClosed); nil while
// it has not.
func (s *Stream) Err() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.err
}

// SetWriteDeadline bounds how long writes wait for flow-control window or
// for the connection's write buffer; zero: no bound.
func (s *Stream) SetWriteDeadline(t time.Time) {
	s.c.mu.Lock()
	s.writeDeadline = t
	s.c.mu.Unlock()
}

// ReadData returns the next piece of the request body, valid until the next
// call, waiting until deadline (zero: no limit; then os.ErrDeadlineExceeded).
// It returns io.EOF after the last piece, and the stream's error once it
// was reset. The bytes handed out are given back to the client's
// flow-control window.
func (s *Stream) ReadData(deadline time.Time) ([]byte, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for s.rxN == 0 && !s.remoteEnded && s.err == nil {
		if s.interrupted {
			return nil, os.ErrDeadlineExceeded
		}
		if err := s.waitLocked(deadline); err != nil {
			return nil, err
		}
	}
	if s.err != nil {
		return nil, s.err
	}
	if s.rxN == 0 {
		return nil, io.EOF
	}
	return s.takeRxLocked(), nil
}

// Interrupt makes a ReadData blocked on another goroutine (and every later
// one that would wait) return os.ErrDeadlineExceeded.
func (s *Stream) Interrupt() {
	c := s.c
	c.mu.Lock()
	s.interrupted = true
	s.cond.Broadcast()
	c.mu.Unlock()
}

// BodyEnded reports whether the request body ended and every byte of it
// was read: the next ReadData returns io.EOF without waiting.
func (s *Stream) BodyEnded() bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.remoteEnded && s.rxN == 0 && s.err == nil
}

// BodyBuffered reports whether the whole request body has arrived (END_STREAM
// received) and how many of its bytes wait to be read: ReadData then
// returns them, and io.EOF, without waiting for the client.
func (s *Stream) BodyBuffered() (n int, ok bool) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.remoteEnded || s.err != nil {
		return 0, false
	}
	return s.rxN, true
}

// remoteEndLocked records END_STREAM from the client.
func (s *Stream) remoteEndLocked() {
	s.remoteEnded = true
	if s.localEnded {
		s.c.forgetLocked(s)
	}
}

// localEndLocked records END_STREAM sent.
func (s *Stream) localEndLocked() {
	s.localEnded = true
	if s.remoteEnded {
		s.c.forgetLocked(s)
	}
}

// resetLocked sends RST_STREAM(code) and fails the stream.
func (s *Stream) resetLocked(code http2.ErrCode, _ bool) {
	if s.err != nil {
		return
	}
	c := s.c
	c.wbuf = appendRST(c.wbuf, s.id, code)
	c.noteResetLocked(s.id, s)
	s.failLocked(&StreamError{Code: code})
}

// peerResetLocked fails the stream the client reset.
func (s *Stream) peerResetLocked(code http2.ErrCode) {
	s.failLocked(&StreamError{Code: code, Remote: true})
}

// failLocked ends the stream with err: it leaves the connection's table,
// its unread bytes go back to the connection window, and waiters wake.
func (s *Stream) failLocked(err error) {
	if s.err == nil {
		s.err = err
	}
	c := s.c
	c.forgetLocked(s)
	if s.rx != nil {
		if !c.closed {
			c.creditConnLocked(int64(s.rxN))
		}
		s.rx.Release()
		s.rx, s.rxN = nil, 0
	}
	s.closeDoneLocked()
	s.cancelContext()
	s.cond.Broadcast()
}

// finish ends the stream after its handler returned: an unfinished
// response ends (empty DATA with END_STREAM after headers, else
// RST_STREAM(INTERNAL_ERROR)), an unfinished request is reset with
// NO_ERROR (RFC 9113 section 8.1), and the stream goes back to the pool.
func (s *Stream) finish() {
	c := s.c
	c.mu.Lock()
	if s.err == nil && !s.localEnded {
		if s.headersSent {
			c.wbuf = appendFrameHeader(c.wbuf, 0, frameData, flagEndStream, s.id)
			s.localEndLocked()
		} else {
			s.resetLocked(http2.ErrCodeInternal, false)
		}
	}
	if s.err == nil && !s.remoteEnded {
		s.resetLocked(http2.ErrCodeNo, false)
	}
	c.forgetLocked(s)
	s.releaseBuffersLocked(s.err == nil && !c.closed)
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	c.handlers--
	c.flushLocked()
	if c.handlers == 0 {
		c.idle.Broadcast()
	}
	c.armIdleLocked()
	c.closeIfIdleLocked()
	c.mu.Unlock()
	s.ctxWG.Wait()
	putStream(s)
}

// forgetLocked removes s from the connection's table of open streams.
func (c *Conn) forgetLocked(s *Stream) {
	if s.inMap {
		delete(c.streams, s.id)
		s.inMap = false
		c.freed++
	}
}

// resetStream is a stream this side reset lately: frames the client sent
// before it saw the RST_STREAM are ignored, but DATA past a declared
// content-length is still malformed.
type resetStream struct {
	id       uint32
	cl, body int64 // content-length (-1: none) and body bytes received
}

// noteResetLocked remembers a stream this side reset (s nil: one that
// never opened).
func (c *Conn) noteResetLocked(id uint32, s *Stream) {
	e := resetStream{id: id, cl: -1}
	if s != nil {
		e.cl, e.body = s.contentLength, s.received
	}
	c.recentReset[c.recentIdx] = e
	c.recentIdx = (c.recentIdx + 1) % len(c.recentReset)
}

// resetEntryLocked is id's entry among the streams this side reset lately;
// nil when it is not one.
func (c *Conn) resetEntryLocked(id uint32) *resetStream {
	for i := range c.recentReset {
		if c.recentReset[i].id == id {
			return &c.recentReset[i]
		}
	}
	return nil
}

// forgetResetLocked drops id from the streams this side reset lately.
func (c *Conn) forgetResetLocked(id uint32) {
	if e := c.resetEntryLocked(id); e != nil {
		*e = resetStream{}
	}
}

// Reset sends RST_STREAM(code) unless the stream already ended; later calls
// fail with a *StreamError.
func (s *Stream) Reset(code http2.ErrCode) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.err == nil && !(s.localEnded && s.remoteEnded) {
		s.resetLocked(code, false)
		c.flushLocked()
	}
}

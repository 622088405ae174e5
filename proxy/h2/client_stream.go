package h2

import (
	"errors"
	"io"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// errReqEnded is returned by a write after the request ended.
var errReqEnded = errors.New("h2: request already ended")

// errNoMethod is NewStream's error for a request without :method.
var errNoMethod = errors.New("h2: request headers without :method")

// ClientStream is one request sent upstream and its response. Streams are
// pooled: a ClientStream and everything it returned are valid only until
// Release. Its methods are for one goroutine at a time (Reset and Done
// from any).
type ClientStream struct {
	streamCore
	cc       *ClientConn
	resp     headers.Map
	trailers headers.Map

	// Guarded by cc.mu.
	head       bool // a HEAD request: content-length says nothing of the body
	gotHeaders bool // the final response headers arrived (resp)
	got100     bool // a 100 (Continue) arrived
}

var clientStreamPool = sync.Pool{New: func() any { return new(ClientStream) }}

// unsafeString is b's bytes as a string without a copy; the string is only
// valid while b is unchanged.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// NewStream sends req's headers (HEADERS and CONTINUATION frames) as a new
// stream, ending the request when end. Pseudo-headers go first; the
// connection-specific fields are dropped, te is kept only as "trailers".
// Without end the frames are queued until the next write or Flush. When
// the connection takes no new stream the error is ErrCannotTakeStream and
// nothing was sent.
func (cc *ClientConn) NewStream(req *headers.Map, end bool) (*ClientStream, error) {
	method, ok := req.Get(headers.Method)
	if !ok {
		return nil, errNoMethod
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.canTakeLocked() {
		return nil, ErrCannotTakeStream
	}
	cc.encodeRequestLocked(req)
	if cc.encBuf.Len() > maxBlockBytes(cc.cfg.MaxHeaderListSize) {
		return nil, errors.New("h2: request header block too large")
	}
	s := clientStreamPool.Get().(*ClientStream)
	s.cc = cc
	s.bind(&cc.connCore, cc.nextID)
	cc.nextID += 2
	s.head = string(method) == "HEAD"
	s.inMap = true
	cc.streams[s.id] = s
	cc.appendHeaderBlockLocked(s.id, cc.encBuf.Bytes(), end)
	if end {
		s.localEnded = true
		cc.flushLocked()
	}
	return s, nil
}

// encodeRequestLocked HPACK-encodes req into cc.encBuf.
func (cc *ClientConn) encodeRequestLocked(req *headers.Map) {
	cc.encBuf.Reset()
	fs := req.Fields()
	for _, f := range fs {
		if len(f.Name) > 0 && f.Name[0] == ':' {
			_ = cc.enc.WriteField(hpack.HeaderField{Name: cc.str(f.Name), Value: cc.str(f.Value)})
		}
	}
	for _, f := range fs {
		if len(f.Name) == 0 || f.Name[0] == ':' || connectionSpecific(f.Name) || string(f.Name) == "host" {
			continue
		}
		if string(f.Name) == "te" && string(f.Value) != "trailers" {
			continue
		}
		_ = cc.enc.WriteField(hpack.HeaderField{Name: cc.str(f.Name), Value: cc.str(f.Value)})
	}
}

// ID is the stream id.
func (s *ClientStream) ID() uint32 { return s.id }

// writableLocked is the error a write gets now; nil: it may go ahead.
func (s *ClientStream) writableLocked() error { return s.streamCore.writableLocked(errReqEnded) }

// SetWriteDeadline bounds how long WriteData waits for flow-control window
// or for the connection's write buffer; zero: no bound.
func (s *ClientStream) SetWriteDeadline(t time.Time) {
	s.cc.mu.Lock()
	s.writeDeadline = t
	s.cc.mu.Unlock()
}

// WriteData sends p as DATA frames (ending the request after it when end),
// waiting for the server's flow-control window and for room in the
// connection's write buffer, at most until the write deadline
// (os.ErrDeadlineExceeded). p may be reused once it returns.
func (s *ClientStream) WriteData(p []byte, end bool) error {
	cc := s.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	ended, err := s.sendDataLocked(p, end, errReqEnded)
	if err != nil {
		return err
	}
	if ended {
		s.localEndLocked()
	}
	cc.flushLocked()
	return s.errAfterFlushLocked()
}

// QueueData is WriteData(p, false) without the flush: the DATA frames wait
// in the connection's write buffer for the next write or Flush (one that
// must wait for a window flushes first), so a body and its end go in one
// syscall.
func (s *ClientStream) QueueData(p []byte) error {
	cc := s.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	_, err := s.sendDataLocked(p, false, errReqEnded)
	return err
}

// CanSend reports whether n body bytes fit the stream's and the
// connection's send windows now: WriteData of them does not wait for the
// server's WINDOW_UPDATE.
func (s *ClientStream) CanSend(n int) bool {
	cc := s.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return s.err == nil && int64(n) <= s.sendWindow && int64(n) <= cc.sendWindow
}

func (s *ClientStream) errAfterFlushLocked() error {
	if s.err != nil {
		return s.err
	}
	if s.cc.werr != nil {
		return s.cc.err
	}
	return nil
}

// WriteTrailers ends the request with trailers (nil or empty: an empty
// DATA frame with END_STREAM).
func (s *ClientStream) WriteTrailers(t *headers.Map) error {
	if t == nil || t.Len() == 0 {
		return s.WriteData(nil, true)
	}
	cc := s.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if err := s.writableLocked(); err != nil {
		return err
	}
	cc.encBuf.Reset()
	cc.encodeRegularLocked(t)
	cc.appendHeaderBlockLocked(s.id, cc.encBuf.Bytes(), true)
	s.localEndLocked()
	cc.flushLocked()
	return s.errAfterFlushLocked()
}

// Flush sends what the connection queued (headers written without end).
func (s *ClientStream) Flush() error {
	cc := s.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	cc.flushLocked()
	return s.errAfterFlushLocked()
}

// ReadHeaders waits, at most until deadline (zero: no limit; then
// os.ErrDeadlineExceeded), for the final response headers (":status" and
// the regular fields, lower-case) and returns them; 1xx responses are
// skipped (Continued reports a 100). The error is the stream's once it
// failed: a *StreamError, ErrUnprocessed or a *ClientConnError.
func (s *ClientStream) ReadHeaders(deadline time.Time) (*headers.Map, error) {
	cc := s.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.flushLocked() // headers queued without end go out before the wait
	for !s.gotHeaders && s.err == nil {
		if err := s.waitLocked(deadline); err != nil {
			return nil, err
		}
	}
	if !s.gotHeaders {
		return nil, s.err
	}
	return &s.resp, nil
}

// Continued reports whether the server sent 100 (Continue).
func (s *ClientStream) Continued() bool {
	s.cc.mu.Lock()
	defer s.cc.mu.Unlock()
	return s.got100
}

// ResponseEnded reports whether the response ended (END_STREAM received)
// and every body byte was read: ReadData returns io.EOF without waiting.
func (s *ClientStream) ResponseEnded() bool {
	s.cc.mu.Lock()
	defer s.cc.mu.Unlock()
	return s.remoteEnded && s.rxN == 0 && s.err == nil
}

// Readable reports whether ReadData returns now, without waiting for the
// server: body bytes are buffered, or the response ended or failed.
func (s *ClientStream) Readable() bool {
	s.cc.mu.Lock()
	defer s.cc.mu.Unlock()
	return s.rxN > 0 || s.remoteEnded || s.err != nil
}

// ReadData returns the next piece of the response body, valid until the
// next call, waiting until deadline (zero: no limit; then
// os.ErrDeadlineExceeded). It returns io.EOF after the last piece and the
// stream's error once it failed (after the bytes received before). The bytes handed out go back to the
// server's flow-control windows (WINDOW_UPDATE in batches).
func (s *ClientStream) ReadData(deadline time.Time) ([]byte, error) {
	cc := s.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for s.rxN == 0 && !s.remoteEnded && s.err == nil {
		if err := s.waitLocked(deadline); err != nil {
			return nil, err
		}
	}
	if s.rxN == 0 {
		if s.err != nil {
			return nil, s.err
		}
		return nil, io.EOF
	}
	return s.takeRxLocked(), nil
}

// Trailers are the response trailers, complete once ReadData returned
// io.EOF; empty when there were none.
func (s *ClientStream) Trailers() *headers.Map { return &s.trailers }

// Err is why the stream failed; nil while it has not.
func (s *ClientStream) Err() error {
	s.cc.mu.Lock()
	defer s.cc.mu.Unlock()
	return s.err
}

// Done is closed once the stream is over: the response ended and the
// request was sent whole, or the stream failed (reset by either side, or
// the connection ended).
func (s *ClientStream) Done() <-chan struct{} {
	s.cc.mu.Lock()
	defer s.cc.mu.Unlock()
	if s.done == nil {
		if s.err != nil || (s.localEnded && s.remoteEnded) {
			return closedChan
		}
		s.done = make(chan struct{})
	}
	return s.done
}

// Reset sends RST_STREAM(code) unless the stream already ended both ways;
// later calls fail with a *StreamError (Remote false).
func (s *ClientStream) Reset(code http2.ErrCode) {
	cc := s.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if s.err == nil && !(s.localEnded && s.remoteEnded) {
		s.resetLocked(code)
		cc.flushLocked()
	}
}

// Release gives the stream back: one not over yet is reset with CANCEL
// first. Nothing the stream returned may be used after it.
func (s *ClientStream) Release() {
	cc := s.cc
	cc.mu.Lock()
	if s.err == nil && !(s.localEnded && s.remoteEnded) {
		s.resetLocked(http2.ErrCodeCancel)
	}
	cc.forgetLocked(s)
	s.releaseBuffersLocked(!cc.closed) // unread bytes go back to the connection window
	cc.flushLocked()
	cc.closeIfIdleLocked()
	s.corep.Store(nil)
	cc.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.cc, s.core = nil, nil
	s.resp.Reset()
	s.trailers.Reset()
	s.head, s.localEnded, s.remoteEnded, s.gotHeaders, s.got100 = false, false, false, false, false
	s.err = nil
	s.received, s.recvUnacked = 0, 0
	s.writeWaiting = false
	s.writeDeadline, s.timerAt = time.Time{}, time.Time{}
	if s.doneClosed { // an open one is kept for the next use
		s.done, s.doneClosed = nil, false
	}
	clientStreamPool.Put(s)
}

// localEndLocked records END_STREAM sent.
func (s *ClientStream) localEndLocked() {
	s.localEnded = true
	if s.remoteEnded {
		s.overLocked()
	}
}

// remoteEndLocked records END_STREAM received.
func (s *ClientStream) remoteEndLocked() {
	s.remoteEnded = true
	if s.localEnded {
		s.overLocked()
	}
}

// overLocked ends a stream that completed both ways.
func (s *ClientStream) overLocked() {
	s.cc.forgetLocked(s)
	s.closeDoneLocked()
	s.cc.closeIfIdleLocked()
}

// resetLocked queues RST_STREAM(code) and fails the stream.
func (s *ClientStream) resetLocked(code http2.ErrCode) {
	if s.err != nil {
		return
	}
	s.cc.wbuf = appendRST(s.cc.wbuf, s.id, code)
	s.failLocked(&StreamError{Code: code})
}

// failLocked ends the stream with err: it leaves the connection's table
// and waiters wake. Body bytes received before stay readable (ReadData
// returns them before err), as they would have been forwarded in order.
func (s *ClientStream) failLocked(err error) {
	if s.err == nil {
		s.err = err
	}
	cc := s.cc
	cc.forgetLocked(s)
	s.closeDoneLocked()
	s.cond.Broadcast()
}

// forgetLocked removes s from the connection's table of open streams.
func (cc *ClientConn) forgetLocked(s *ClientStream) {
	if s.inMap {
		delete(cc.streams, s.id)
		s.inMap = false
	}
}

package h2

import (
	"errors"

	"golang.org/x/net/http2/hpack"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// writeHighWater is the write buffer size past which writers send it (or
// wait for the writer sending it) before queueing more body bytes.
const writeHighWater = 64 << 10

// internMax bounds the strings kept for the HPACK encoder.
const internMax = 512

var errNoStatus = errors.New("h2: response headers without :status")

// wakeWritersLocked wakes the streams waiting to write.
func (c *Conn) wakeWritersLocked() {
	if c.writeWait == 0 {
		return
	}
	for _, s := range c.streams {
		if s.writeWaiting {
			s.cond.Broadcast()
		}
	}
}

// encodeLocked HPACK-encodes h into c.encBuf: :status first for a
// response, then every regular field but the connection-specific ones.
func (c *Conn) encodeLocked(h *headers.Map, trailers bool) error {
	c.encBuf.Reset()
	if !trailers {
		v, ok := h.Get(headers.Status)
		if !ok {
			return errNoStatus
		}
		_ = c.enc.WriteField(hpack.HeaderField{Name: headers.Status, Value: c.str(v)})
	}
	c.encodeRegularLocked(h)
	return nil
}

// encodeRegularLocked HPACK-encodes h's regular fields into c.encBuf, but
// the connection-specific ones.
func (c *connCore) encodeRegularLocked(h *headers.Map) {
	for _, f := range h.Fields() {
		if len(f.Name) == 0 || f.Name[0] == ':' || connectionSpecific(f.Name) {
			continue
		}
		_ = c.enc.WriteField(hpack.HeaderField{Name: c.str(f.Name), Value: c.str(f.Value)})
	}
}

func connectionSpecific(name []byte) bool {
	switch string(name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// writableLocked is the error a write gets now; nil: it may go ahead.
func (s *Stream) writableLocked() error { return s.streamCore.writableLocked(errEnded) }

// WriteHeaders queues the response headers (":status" from h, 1xx allowed
// before the final ones) and sends them at once when end, else with the
// next write or Flush.
func (s *Stream) WriteHeaders(h *headers.Map, end bool) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.writableLocked(); err != nil {
		return err
	}
	status := h.StatusCode()
	info := status >= 100 && status < 200
	if info && end {
		return errors.New("h2: a 1xx response cannot end the stream")
	}
	if s.headersSent {
		return errors.New("h2: response headers already sent")
	}
	if err := c.encodeLocked(h, false); err != nil {
		return err
	}
	c.appendHeaderBlockLocked(s.id, c.encBuf.Bytes(), end)
	if !info {
		s.headersSent = true
	}
	if end || info {
		if end {
			s.localEndLocked()
		}
		c.flushLocked()
	}
	return nil
}

// WriteTrailers ends the response with trailers (an empty map: an empty
// DATA frame with END_STREAM).
func (s *Stream) WriteTrailers(t *headers.Map) error {
	if t == nil || t.Len() == 0 {
		return s.WriteData(nil, true)
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.writableLocked(); err != nil {
		return err
	}
	if !s.headersSent {
		return errors.New("h2: trailers before response headers")
	}
	_ = c.encodeLocked(t, true)
	c.appendHeaderBlockLocked(s.id, c.encBuf.Bytes(), true)
	s.localEndLocked()
	c.flushLocked()
	return nil
}

// WriteData sends p as DATA frames (ending the stream after it when end),
// waiting for the client's flow-control window and for room in the
// connection's write buffer, at most until the write deadline.
func (s *Stream) WriteData(p []byte, end bool) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.writableLocked(); err != nil {
		return err
	}
	if !s.headersSent {
		return errors.New("h2: data before response headers")
	}
	ended, err := s.sendDataLocked(p, end, errEnded)
	if err != nil {
		return err
	}
	if ended {
		s.localEndLocked()
	}
	c.flushLocked()
	return s.errAfterFlushLocked()
}

// writeFailedLocked closes the connection after a failed write.
func (c *Conn) writeFailedLocked(err error) { c.closeLocked(err) }

// errAfterFlushLocked reports a write failure of the connection.
func (s *Stream) errAfterFlushLocked() error {
	if s.c.werr != nil {
		return ErrConnClosed
	}
	return nil
}

// Flush sends what the stream queued (headers written without end).
func (s *Stream) Flush() error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	c.flushLocked()
	return s.errAfterFlushLocked()
}

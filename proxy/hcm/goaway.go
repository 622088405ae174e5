package hcm

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Two-step GOAWAY, Envoy's drain sequence for HTTP/2: a first GOAWAY with
// the last stream id 2^31-1 (the shutdown notice: "stop opening streams
// soon"), then, drain_timeout later, the real GOAWAY naming the last stream
// the proxy took; the connection closes once its streams are done. Streams
// the client opens between the two are served. x/net's server has no
// shutdown notice, so frameConn writes both frames itself, between the
// frames x/net writes, and learns the client's last stream id from the
// frames it reads.

// maxStreamID is the shutdown notice's last stream id.
const maxStreamID = 1<<31 - 1

// frameConn is an HTTP/2 server connection that tracks frame boundaries in
// both directions: it can inject whole frames between x/net's, and it knows
// the highest stream id the client opened.
type frameConn struct {
	net.Conn

	wmu     sync.Mutex
	out     frameTracker
	pending []byte // frames to write at the next outgoing frame boundary
	werr    error

	in    frameTracker // read side; only the reading goroutine touches it
	maxID atomic.Uint32
}

// frameTracker follows a stream of HTTP/2 frames: skip is bytes to pass
// over first (the client preface), then 9-byte headers and payloads.
type frameTracker struct {
	skip int
	hdr  [9]byte
	hn   int // header bytes seen of the current frame
	left int // payload bytes still to come
}

// boundary reports whether the stream is between two frames.
func (t *frameTracker) boundary() bool { return t.skip == 0 && t.hn == 0 && t.left == 0 }

// advance consumes p, calling header for each complete frame header.
func (t *frameTracker) advance(p []byte, header func(h *[9]byte)) {
	for len(p) > 0 {
		switch {
		case t.skip > 0:
			n := min(t.skip, len(p))
			t.skip -= n
			p = p[n:]
		case t.hn < 9:
			n := copy(t.hdr[t.hn:], p)
			t.hn += n
			p = p[n:]
			if t.hn == 9 {
				t.left = int(t.hdr[0])<<16 | int(t.hdr[1])<<8 | int(t.hdr[2])
				if header != nil {
					header(&t.hdr)
				}
				if t.left == 0 {
					t.hn = 0
				}
			}
		default:
			n := min(t.left, len(p))
			t.left -= n
			p = p[n:]
			if t.left == 0 {
				t.hn = 0
			}
		}
	}
}

func newFrameConn(c net.Conn) *frameConn {
	return &frameConn{Conn: c, in: frameTracker{skip: len(h2Preface)}}
}

func (c *frameConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.advance(p[:n], func(h *[9]byte) {
		if h[3] == 0x1 { // HEADERS opens a stream
			if id := binary.BigEndian.Uint32(h[5:9]) & maxStreamID; id > c.maxID.Load() {
				c.maxID.Store(id)
			}
		}
	})
	return n, err
}

func (c *frameConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.Conn.Write(p)
	c.out.advance(p[:n], nil)
	if err == nil && len(c.pending) > 0 && c.out.boundary() {
		c.flushPending()
	}
	return n, err
}

// inject writes a frame at the next frame boundary: at once when x/net is
// between frames, else right after the frame it is writing.
func (c *frameConn) inject(frame []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.pending = append(c.pending, frame...)
	if c.out.boundary() {
		c.flushPending()
	}
}

func (c *frameConn) flushPending() {
	if c.werr == nil {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, c.werr = c.Conn.Write(c.pending)
		_ = c.Conn.SetWriteDeadline(time.Time{})
	}
	c.pending = c.pending[:0]
}

// goAwayFrame is a GOAWAY frame with NO_ERROR.
func goAwayFrame(lastStreamID uint32) []byte {
	f := make([]byte, 9+8)
	f[2] = 8   // length
	f[3] = 0x7 // GOAWAY
	binary.BigEndian.PutUint32(f[9:13], lastStreamID&maxStreamID)
	return f // error code 0: NO_ERROR
}

// startDrain begins the two-step GOAWAY on hc, once: the shutdown notice
// now, the real GOAWAY after drain_timeout.
func (hc *h2Conn) startDrain() {
	if hc.drained.Swap(true) {
		return
	}
	hc.cfg.stats.cxDrainClose.Inc()
	hc.fc.inject(goAwayFrame(maxStreamID))
	t := time.AfterFunc(hc.cfg.drainTimeout, hc.finalGoAway)
	hc.mu.Lock()
	hc.drainTimer = t
	hc.mu.Unlock()
}

// finalGoAway sends the real GOAWAY, naming the last stream the client
// opened, and closes the connection once no stream is open.
func (hc *h2Conn) finalGoAway() {
	hc.fc.inject(goAwayFrame(hc.fc.maxID.Load()))
	hc.goneAway.Store(true)
	hc.mu.Lock()
	idle, done := hc.active == 0, hc.done
	hc.mu.Unlock()
	if idle && !done {
		// Give the client a moment to read the GOAWAY before the close.
		time.AfterFunc(idleGrace, func() {
			hc.mu.Lock()
			idle := hc.active == 0
			hc.mu.Unlock()
			if idle {
				_ = hc.nc.Close()
			}
		})
	}
}

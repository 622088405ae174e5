package hcm

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/telemetry/stats"
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
// both directions: it can inject whole frames between x/net's, it knows
// the highest stream id the client opened, and it enforces Envoy's flood
// limits (h2limits.go). x/net's writes go to an outbound queue that a
// goroutine moves to the socket, so that the frames the socket has not
// taken yet can be counted.
type frameConn struct {
	net.Conn
	lim h2Limits
	st  *floodStats

	wmu     sync.Mutex
	wcond   sync.Cond
	out     frameTracker
	pending []byte // frames to queue at the next outgoing frame boundary
	werr    error
	closing bool
	wdone   chan struct{} // closed when writeLoop ends; nil: not started

	queue, spare      []byte // bytes not yet handed to the socket; a reused buffer
	qFrames, qControl uint64 // frames (control frames) in queue
	fFrames, fControl uint64 // frames (control frames) in the write in flight
	outFn             func(h *[9]byte)
	dataSent          atomic.Uint64 // DATA frames x/net wrote, for the WINDOW_UPDATE limit
	opened            atomic.Uint64 // HEADERS frames x/net wrote: Envoy's downstream opened_streams
	flooded           atomic.Bool
	floodAt           *stats.Counter // an inbound flood found past the bytes last returned; owned by Read
	goAwaySent        atomic.Bool    // x/net wrote a GOAWAY

	rd    inboundState // read side; only the reading goroutine touches it
	rbuf  readBuffer   // read side: batches x/net's small reads (h2read.go)
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

func newFrameConn(c net.Conn, lim h2Limits, st *floodStats) *frameConn {
	fc := &frameConn{Conn: c, lim: lim, st: st, rd: inboundState{skip: len(h2Preface)}}
	fc.wcond.L = &fc.wmu
	fc.outFn = fc.outFrame
	return fc
}

func (c *frameConn) Read(p []byte) (int, error) {
	if s := c.floodAt; s != nil {
		// The frames before the one over the limit went to x/net first, as
		// Envoy processes frames in order: unless one of them made x/net
		// end the connection (a FLOW_CONTROL_ERROR GOAWAY), this is a flood.
		c.floodAt = nil
		if !c.goAwaySent.Load() {
			return 0, c.floodErr(s)
		}
	}
	n, err := c.rbuf.read(c.Conn, p)
	if c.goAwaySent.Load() {
		return n, err // x/net is closing the connection: Envoy would have closed it already
	}
	if s, start := c.inbound(p[:n]); s != nil {
		if start > 0 {
			// x/net reads frame by frame, each only once the one before is
			// handled: hand it the frames before the offending one now.
			c.floodAt = s
			return start, nil
		}
		return 0, c.floodErr(s)
	}
	return n, err
}

// floodErr counts an inbound flood once and returns the error that makes
// x/net close the connection, flushing what it queued (Envoy's
// FlushWriteAndDelay). x/net handles frames in order but writes its answer
// from another goroutine: when a frame before the offending one made it
// end the connection (a FLOW_CONTROL_ERROR GOAWAY), that GOAWAY is let out
// first, as in Envoy, where processing stops at the error.
func (c *frameConn) floodErr(s *stats.Counter) error {
	for i := 0; i < 50 && !c.goAwaySent.Load(); i++ {
		time.Sleep(time.Millisecond)
	}
	if c.goAwaySent.Load() {
		return io.EOF // x/net is ending the connection already
	}
	if !c.flooded.Swap(true) {
		s.Inc()
	}
	return errFlood
}

func (c *frameConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for c.werr == nil && !c.closing && len(c.queue) >= outHighWater {
		c.wcond.Wait()
	}
	if c.werr != nil {
		return 0, c.werr
	}
	if c.closing {
		return 0, net.ErrClosed
	}
	c.queue = append(c.queue, p...)
	c.out.advance(p, c.outFn)
	if len(c.pending) > 0 && c.out.boundary() {
		c.queuePending()
	}
	if s := c.outboundFlood(); s != nil {
		c.werr = errFlood
		c.wcond.Broadcast()
		c.flood(s)
		return 0, errFlood
	}
	c.kick()
	return len(p), nil
}

// kick wakes the write loop, starting it on first use; wmu held.
func (c *frameConn) kick() {
	if c.wdone == nil {
		c.wdone = make(chan struct{})
		go c.writeLoop()
	}
	c.wcond.Broadcast()
}

// inject writes a frame at the next frame boundary: at once when x/net is
// between frames, else right after the frame it is writing.
func (c *frameConn) inject(frame []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.pending = append(c.pending, frame...)
	if c.out.boundary() {
		c.queuePending()
	}
}

func (c *frameConn) queuePending() {
	if c.werr == nil && !c.closing {
		c.queue = append(c.queue, c.pending...)
		c.qFrames++
		c.kick()
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
	if hc.own != nil {
		hc.own.GoAway()
	} else {
		hc.fc.inject(goAwayFrame(maxStreamID))
	}
	t := time.AfterFunc(hc.cfg.drainTimeout, hc.finalGoAway)
	hc.mu.Lock()
	hc.drainTimer = t
	hc.mu.Unlock()
}

// finalGoAway sends the real GOAWAY, naming the last stream the client
// opened, and closes the connection once no stream is open.
func (hc *h2Conn) finalGoAway() {
	if hc.own != nil {
		hc.own.GoAwayFinal(http2.ErrCodeNo, nil)
	} else {
		hc.fc.inject(goAwayFrame(hc.fc.maxID.Load()))
	}
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

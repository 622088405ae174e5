package hcm

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Envoy's HTTP/2 flood limits (its codec's ProtocolConstraints), enforced on
// the bytes between the codec (proxy/h2) and the socket: frameConn counts
// the frames the codec queued but the socket has not accepted yet (the
// outbound queue, Envoy's output buffer) and parses inbound frame headers
// before the codec sees them. A violation counts http2.<flood> and closes
// the connection at once.

// Envoy's defaults for the http2_protocol_options flood limits.
const (
	defMaxOutboundFrames        = 10000
	defMaxOutboundControlFrames = 1000
	defMaxEmptyFrames           = 1
	defMaxPriorityPerStream     = 100
	defMaxWindowUpdatePerData   = 10
)

// outHighWater bounds the bytes frameConn queues: past it the codec's writes
// block until the socket takes some (Envoy's connection buffer limit, 1 MiB).
const outHighWater = 1 << 20

// errFlood is the error the codec sees when a flood limit closed the connection.
var errFlood = errors.New("http2: flood limit exceeded")

// h2Limits are the flood limits of one HTTP/2 configuration; the zero value
// is not used (compileHTTP2 fills in Envoy's defaults).
type h2Limits struct {
	maxOutbound, maxOutboundControl        uint32
	maxEmpty, maxPriority, maxWindowUpdate uint32
}

func defaultH2Limits() h2Limits {
	return h2Limits{defMaxOutboundFrames, defMaxOutboundControlFrames, defMaxEmptyFrames,
		defMaxPriorityPerStream, defMaxWindowUpdatePerData}
}

// compileLimits reads the five flood fields of p over Envoy's defaults.
func compileLimits(p *corev3.Http2ProtocolOptions) h2Limits {
	l := defaultH2Limits()
	set := func(dst *uint32, v interface{ GetValue() uint32 }, ok bool) {
		if ok {
			*dst = v.GetValue()
		}
	}
	set(&l.maxOutbound, p.GetMaxOutboundFrames(), p.GetMaxOutboundFrames() != nil)
	set(&l.maxOutboundControl, p.GetMaxOutboundControlFrames(), p.GetMaxOutboundControlFrames() != nil)
	set(&l.maxEmpty, p.GetMaxConsecutiveInboundFramesWithEmptyPayload(), p.GetMaxConsecutiveInboundFramesWithEmptyPayload() != nil)
	set(&l.maxPriority, p.GetMaxInboundPriorityFramesPerStream(), p.GetMaxInboundPriorityFramesPerStream() != nil)
	set(&l.maxWindowUpdate, p.GetMaxInboundWindowUpdateFramesPerDataFrameSent(), p.GetMaxInboundWindowUpdateFramesPerDataFrameSent() != nil)
	return l
}

// floodStats are Envoy's HTTP/2 codec stats, rooted at http2.
type floodStats struct {
	outbound, outboundControl, emptyFrames, priority, windowUpdate *stats.Counter
}

func newFloodStats(st *stats.Store) *floodStats {
	return &floodStats{
		outbound:        st.Counter("http2.outbound_flood"),
		outboundControl: st.Counter("http2.outbound_control_flood"),
		emptyFrames:     st.Counter("http2.inbound_empty_frames_flood"),
		priority:        st.Counter("http2.inbound_priority_frames_flood"),
		windowUpdate:    st.Counter("http2.inbound_window_update_frames_flood"),
	}
}

// frameConn is the socket under an HTTP/2 server connection: it tracks
// frames in both directions and enforces Envoy's flood limits. The codec's
// writes go to an outbound queue that a goroutine moves to the socket, so
// that the frames the socket has not taken yet can be counted.
type frameConn struct {
	net.Conn
	lim h2Limits
	st  *floodStats

	wmu     sync.Mutex
	wcond   sync.Cond
	out     frameTracker
	werr    error
	closing bool
	wdone   chan struct{} // closed when writeLoop ends; nil: not started

	queue, spare      []byte // bytes not yet handed to the socket; a reused buffer
	qFrames, qControl uint64 // frames (control frames) in queue
	fFrames, fControl uint64 // frames (control frames) in the write in flight
	outFn             func(h *[9]byte)
	dataSent          atomic.Uint64 // DATA frames the codec wrote, for the WINDOW_UPDATE limit
	opened            atomic.Uint64 // HEADERS frames the codec wrote: Envoy's downstream opened_streams
	flooded           atomic.Bool
	floodAt           *stats.Counter // an inbound flood found past the bytes last returned; owned by Read
	goAwaySent        atomic.Bool    // the codec wrote a GOAWAY

	rd   inboundState // read side; only the reading goroutine touches it
	rbuf readBuffer   // read side: batches the codec's small reads (h2read.go)
}

// frameTracker follows a stream of HTTP/2 frames: skip is bytes to pass
// over first (the client preface), then 9-byte headers and payloads.
type frameTracker struct {
	skip int
	hdr  [9]byte
	hn   int // header bytes seen of the current frame
	left int // payload bytes still to come
}

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
		// The frames before the one over the limit went to the codec first,
		// as Envoy processes frames in order: unless one of them made the
		// codec end the connection (a FLOW_CONTROL_ERROR GOAWAY), this is a
		// flood.
		c.floodAt = nil
		if !c.goAwaySent.Load() {
			return 0, c.floodErr(s)
		}
	}
	n, err := c.rbuf.read(c.Conn, p)
	if c.goAwaySent.Load() {
		return n, err // the codec is closing the connection: Envoy would have closed it already
	}
	if s, start := c.inbound(p[:n]); s != nil {
		if start > 0 {
			// The codec handles the frames it read in order: hand it the
			// frames before the offending one now.
			c.floodAt = s
			return start, nil
		}
		return 0, c.floodErr(s)
	}
	return n, err
}

// floodErr counts an inbound flood once and returns the error that makes
// the codec close the connection, flushing what it queued (Envoy's
// FlushWriteAndDelay). When a frame before the offending one made the codec
// end the connection (a FLOW_CONTROL_ERROR GOAWAY), that GOAWAY, which may
// be written from another goroutine, is let out first, as in Envoy, where
// processing stops at the error.
func (c *frameConn) floodErr(s *stats.Counter) error {
	for i := 0; i < 50 && !c.goAwaySent.Load(); i++ {
		time.Sleep(time.Millisecond)
	}
	if c.goAwaySent.Load() {
		return io.EOF // the codec is ending the connection already
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

// Envoy's opened_streams, downstream, counts the response headers it sent
// (not the requests); frameConn counts every HEADERS frame the codec writes,
// which also takes in 1xx headers and trailers: slightly more lenient.

// inboundState is the read side: a frame parser that also looks at the
// first payload byte (the pad length of padded frames), and Envoy's
// counters. Only the reading goroutine touches it.
type inboundState struct {
	skip    int
	hdr     [9]byte
	hn      int
	left    int
	padWait bool // the current frame is padded: its first payload byte decides emptiness

	empty, priority, windowUpdate uint64
}

// inbound parses p as it goes to the codec; it returns the stat of the first
// limit exceeded, or nil.
func (c *frameConn) inbound(p []byte) (bad *stats.Counter, start int) {
	t := &c.rd
	total := len(p)
	for len(p) > 0 {
		switch {
		case t.skip > 0:
			n := min(t.skip, len(p))
			t.skip -= n
			p = p[n:]
		case t.hn < 9:
			if t.hn == 0 {
				start = total - len(p) // this frame begins here
			}
			n := copy(t.hdr[t.hn:], p)
			t.hn += n
			p = p[n:]
			if t.hn < 9 {
				continue
			}
			t.left = int(t.hdr[0])<<16 | int(t.hdr[1])<<8 | int(t.hdr[2])
			if bad := c.frameHeader(); bad != nil {
				return bad, start
			}
			if t.left == 0 {
				t.hn = 0
			}
		default:
			if t.padWait {
				t.padWait = false
				if bad := c.countEmpty(t.left == 1+int(p[0])); bad != nil {
					return bad, start
				}
			}
			n := min(t.left, len(p))
			t.left -= n
			p = p[n:]
			if t.left == 0 {
				t.hn = 0
			}
		}
	}
	return nil, 0
}

// frameHeader accounts for the frame header in c.rd.hdr.
func (c *frameConn) frameHeader() *stats.Counter {
	t := &c.rd
	typ, flags := t.hdr[3], t.hdr[4]
	switch typ {
	case 0x0, 0x1, 0x9: // DATA, HEADERS, CONTINUATION
		if typ != 0x9 && flags&0x8 != 0 && t.left > 0 { // PADDED
			if flags&0x1 != 0 {
				return c.countEmpty(false)
			}
			t.padWait = true
			return nil
		}
		return c.countEmpty(t.left == 0 && flags&0x1 == 0)
	case 0x2: // PRIORITY
		t.priority++
		if t.priority > uint64(c.lim.maxPriority)*(1+c.opened.Load()) {
			return c.st.priority
		}
	case 0x8: // WINDOW_UPDATE
		t.windowUpdate++
		if t.windowUpdate > 5+2*(c.opened.Load()+uint64(c.lim.maxWindowUpdate)*c.dataSent.Load()) {
			return c.st.windowUpdate
		}
	}
	return nil
}

// countEmpty tracks consecutive DATA/HEADERS/CONTINUATION frames with an
// empty payload and no END_STREAM.
func (c *frameConn) countEmpty(empty bool) *stats.Counter {
	t := &c.rd
	if !empty {
		t.empty = 0
		return nil
	}
	t.empty++
	if t.empty > uint64(c.lim.maxEmpty) {
		return c.st.emptyFrames
	}
	return nil
}

// outFrame counts a frame the codec wrote (its header in c.out.hdr) into the
// outbound queue; called with wmu held.
func (c *frameConn) outFrame(h *[9]byte) {
	c.qFrames++
	switch h[3] {
	case 0x0:
		c.dataSent.Add(1)
	case 0x1:
		c.opened.Add(1)
	case 0x7:
		c.goAwaySent.Store(true)
	case 0x3: // RST_STREAM
		c.qControl++
	case 0x4, 0x6: // SETTINGS and PING: their ACKs are control frames
		if h[4]&0x1 != 0 {
			c.qControl++
		}
	}
}

// outboundFlood reports the stat of the outbound limit exceeded, if any;
// called with wmu held.
func (c *frameConn) outboundFlood() *stats.Counter {
	if c.qFrames+c.fFrames > uint64(c.lim.maxOutbound) {
		return c.st.outbound
	}
	if c.qControl+c.fControl > uint64(c.lim.maxOutboundControl) {
		return c.st.outboundControl
	}
	return nil
}

// flood closes the connection for the outbound limit whose stat is s,
// once, without flushing: the client is not reading.
func (c *frameConn) flood(s *stats.Counter) {
	if c.flooded.Swap(true) {
		return
	}
	s.Inc()
	_ = c.Conn.Close()
}

// writeLoop moves the outbound queue to the socket, one batch per write,
// until the connection closes; then it closes the socket.
func (c *frameConn) writeLoop() {
	defer close(c.wdone)
	c.wmu.Lock()
	for {
		for len(c.queue) == 0 && !c.closing && c.werr == nil {
			c.wcond.Wait()
		}
		if c.werr != nil || (c.closing && len(c.queue) == 0) {
			break
		}
		buf := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.fFrames, c.fControl, c.qFrames, c.qControl = c.qFrames, c.qControl, 0, 0
		c.wmu.Unlock()
		_, err := c.Conn.Write(buf)
		c.wmu.Lock()
		if cap(buf) <= 2*outHighWater {
			c.spare = buf[:0]
		}
		c.fFrames, c.fControl = 0, 0
		if err != nil && c.werr == nil {
			c.werr = err
		}
		c.wcond.Broadcast()
	}
	c.wmu.Unlock()
	_ = c.Conn.Close()
}

// Close flushes what the codec queued (for at most a second) and closes the
// socket.
func (c *frameConn) Close() error {
	c.wmu.Lock()
	if c.closing {
		c.wmu.Unlock()
		return nil
	}
	c.closing = true
	started := c.wdone != nil
	c.wcond.Broadcast()
	c.wmu.Unlock()
	if !started {
		return c.Conn.Close()
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	<-c.wdone
	return nil
}

var _ net.Conn = (*frameConn)(nil)

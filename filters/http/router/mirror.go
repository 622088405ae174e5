package router

import (
	"context"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/outrider-proxy/outrider/proxy/buffer"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/runtime"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// mirror starts fire-and-forget copies of the request to the route's
// request_mirror_policies clusters, with "-shadow" appended to the host as
// Envoy does; runtime_fraction samples them through the process runtime
// (its runtime_key, else its default_value). A shadow never
// affects the primary: it runs on its own goroutine with its own copy of the
// headers, and its answer is read and dropped. When the request has a body
// (end false), mirrorData and mirrorTrailers copy it to every shadow as it
// is forwarded, without ever waiting for one.
func (f *filter) mirror(h *headers.Map, end bool) {
	for _, p := range f.route.RequestMirrorPolicies() {
		if rf := p.GetRuntimeFraction(); rf != nil && !runtime.Process().FeatureEnabled(rf.GetRuntimeKey(), rf.GetDefaultValue(), rand.Uint64()) {
			continue
		}
		name := p.GetCluster()
		if hn := p.GetClusterHeader(); hn != "" {
			v, ok := h.Get(strings.ToLower(hn)) // the header's first value; none: no shadow
			if !ok || len(v) == 0 {
				continue
			}
			name = string(v)
		}
		cl := f.cfg.clusters.Get(name)
		if cl == nil {
			continue
		}
		req := h.Clone()
		if host, ok := req.Get(headers.Authority); ok && !p.GetDisableShadowHostSuffixAppend() {
			req.Set(headers.Authority, shadowHost(string(host)))
		}
		timeout := f.timeout
		if timeout <= 0 {
			timeout = 15 * time.Second
		}
		var s *shadow
		if !end {
			s = newShadow(f.cb.BufferLimit())
			f.res.shadows = append(f.res.shadows, s)
		}
		go sendShadow(cl, req, s, timeout)
	}
}

// chunkOverhead is what each queued piece counts for besides its bytes,
// so that a flood of tiny pieces is bounded too.
const chunkOverhead = 64

// shadow is the queue between the primary, which adds body pieces, and the
// goroutine sending them to the shadow's upstream. It holds at most the
// buffer limit; a shadow that falls further behind is abandoned (its
// upstream request reset), so the primary never waits for it.
type shadow struct {
	mu        sync.Mutex
	q         []shadowChunk
	queued    int64 // bytes in q, with chunkOverhead each
	limit     int64
	closed    bool // no more pieces: the last one is queued, or abandoned
	abandoned bool
	gone      bool          // the sending goroutine stopped
	wake      chan struct{} // capacity 1: pieces or closing to look at
}

func newShadow(limit int) *shadow {
	return &shadow{limit: int64(limit), wake: make(chan struct{}, 1)}
}

// shadowChunk is a copy of a body piece (buf nil for none), or trailers.
type shadowChunk struct {
	buf      *buffer.Slice
	n        int
	trailers *headers.Map
	end      bool
}

// mirrorData copies a body piece to every shadow still running.
func (f *filter) mirrorData(p []byte, end bool) {
	for _, s := range f.res.shadows {
		c := shadowChunk{n: len(p), end: end}
		if len(p) > 0 {
			c.buf = buffer.Get(len(p))
			copy(c.buf.Bytes(), p)
		}
		s.send(c)
	}
	if end {
		f.res.shadows = f.res.shadows[:0]
	}
}

// mirrorTrailers ends every shadow's request with a copy of the trailers.
func (f *filter) mirrorTrailers(t *headers.Map) {
	for _, s := range f.res.shadows {
		s.send(shadowChunk{trailers: t.Clone(), end: true})
	}
	f.res.shadows = f.res.shadows[:0]
}

// abandonShadows gives up the shadows of a request whose body will not
// end (the stream is being reset); their upstream requests are reset.
func (f *filter) abandonShadows() {
	for _, s := range f.res.shadows {
		s.abandon()
	}
	f.res.shadows = f.res.shadows[:0]
}

// send queues c without blocking; a shadow that cannot take it is
// abandoned.
func (s *shadow) send(c shadowChunk) {
	s.mu.Lock()
	switch {
	case s.closed || s.gone:
		c.release()
	case s.queued+int64(c.n)+chunkOverhead > s.limit:
		c.release()
		s.closed, s.abandoned = true, true
	default:
		s.q = append(s.q, c)
		s.queued += int64(c.n) + chunkOverhead
		s.closed = c.end
	}
	s.mu.Unlock()
	s.signal()
}

func (s *shadow) abandon() {
	s.mu.Lock()
	if !s.closed {
		s.closed, s.abandoned = true, true
	}
	s.mu.Unlock()
	s.signal()
}

func (s *shadow) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// next takes the oldest queued piece; ok false with done true means the
// request will get no more pieces (abandoned).
func (s *shadow) next() (c shadowChunk, ok, done bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.q) > 0 {
		c = s.q[0]
		s.q[0] = shadowChunk{}
		s.q = s.q[1:]
		s.queued -= int64(c.n) + chunkOverhead
		return c, true, false
	}
	return c, false, s.closed
}

func (c *shadowChunk) release() {
	if c.buf != nil {
		c.buf.Release()
		c.buf = nil
	}
}

// shadowHost appends "-shadow" to the host part, before any port.
func shadowHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i > 0 && !strings.HasSuffix(host, "]") {
		return host[:i] + "-shadow" + host[i:]
	}
	return host + "-shadow"
}

// sendShadow sends one mirrored request: the headers, then (s non-nil) the
// body as the primary forwards it, then reads and drops the answer. Every
// wait is bounded by timeout: the upstream's, and the primary's between
// two body pieces.
func sendShadow(cl *upstream.Cluster, req *headers.Map, s *shadow, timeout time.Duration) {
	if s != nil {
		defer s.stop()
	}
	h := cl.ChooseHost(&upstream.LBContext{})
	if h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pc, err := cl.Pool(h).Get(ctx)
	if err != nil {
		return
	}
	reusable := false
	defer func() { pc.Release(reusable) }()
	codec := codecOf(pc, cl)
	_ = pc.Conn.SetDeadline(time.Now().Add(timeout))
	defer pc.Conn.SetDeadline(time.Time{})
	if codec.enc.WriteRequestHeaders(req, s == nil) != nil || codec.enc.Flush() != nil {
		return
	}
	if s != nil && !s.forward(codec.enc, pc, timeout) {
		return
	}
	_ = pc.Conn.SetDeadline(time.Now().Add(timeout))
	method, _ := req.Get(headers.Method)
	var resp headers.Map
	msg, err := codec.dec.ReadResponseHeaders(&resp, method)
	for err == nil && resp.StatusCode() >= 100 && resp.StatusCode() < 200 {
		msg, err = codec.dec.ReadResponseHeaders(&resp, method)
	}
	if err != nil {
		return
	}
	cl.Stats.RecordResponse(resp.StatusCode())
	if !msg.NoBody {
		for {
			if _, err := codec.dec.ReadData(); err != nil {
				if err != io.EOF {
					return
				}
				break
			}
		}
	}
	reusable = msg.KeepAlive && !msg.CloseDelimited
}

// forward writes the body pieces as they come until the last one. It
// reports false when the request cannot be completed: the primary
// abandoned it, stopped sending for timeout, or the upstream failed.
func (s *shadow) forward(enc *http1.Encoder, pc *upstream.PooledConn, timeout time.Duration) bool {
	idle := time.NewTimer(timeout)
	defer idle.Stop()
	for {
		c, ok, done := s.next()
		if !ok {
			if done {
				return false // abandoned before its end
			}
			select {
			case <-s.wake:
				continue
			case <-idle.C:
				return false
			}
		}
		_ = pc.Conn.SetDeadline(time.Now().Add(timeout))
		var err error
		if c.trailers != nil {
			err = enc.WriteTrailers(c.trailers)
		} else {
			var p []byte
			if c.buf != nil {
				p = c.buf.Bytes()[:c.n]
			}
			err = enc.WriteData(p, c.end)
		}
		c.release()
		if err == nil {
			err = enc.Flush()
		}
		if err != nil {
			return false
		}
		if c.end {
			return true
		}
		idle.Reset(timeout)
	}
}

// stop marks the shadow gone and releases what is still queued.
func (s *shadow) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gone = true
	for i := range s.q {
		s.q[i].release()
	}
	s.q = nil
}

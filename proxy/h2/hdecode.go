package h2

import (
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// Pseudo-header bits seen in a block.
const (
	pMethod = 1 << iota
	pScheme
	pPath
	pAuthority
	pProtocol
)

// hblock is the header block being read: a HEADERS frame and its
// CONTINUATION frames. The read loop owns it.
type hblock struct {
	active    bool // waiting for CONTINUATION
	id        uint32
	s         *Stream      // a new stream decoded into; nil for trailers or an ignored block
	target    *headers.Map // where fields go; nil: decode for the HPACK state only
	trailers  bool
	endStream bool
	bytes     int           // block bytes so far
	size      int           // header list size (RFC 9113 section 6.5.2)
	bad       http2.ErrCode // a stream error found while decoding; 0: none
	tooLarge  bool
	pseudo    int
	regular   bool
	connect   bool
	cookies   int
	cl        int64 // content-length; -1: none
	scratch   headers.Map
}

func (c *Conn) onHeaders(f *frame) error {
	id := f.id
	p, selfDep, err := headersPayload(f, "HEADERS on an even stream id")
	if err != nil {
		return err
	}
	b := &c.hb
	*b = hblock{active: true, id: id, endStream: f.has(flagEndStream), cl: -1, scratch: b.scratch}
	b.scratch.Reset()
	c.mu.Lock()
	s := c.streams[id]
	switch {
	case s != nil && s.remoteEnded:
		c.mu.Unlock()
		c.streamError(id, http2.ErrCodeStreamClosed)
	case s != nil: // trailers
		c.mu.Unlock()
		b.trailers, b.target = true, &b.scratch
		if !b.endStream {
			b.bad = http2.ErrCodeProtocol
		}
	case id <= c.maxID:
		wasReset := c.resetEntryLocked(id) != nil
		c.mu.Unlock()
		if !wasReset {
			return connError{http2.ErrCodeProtocol, "HEADERS on a closed stream"}
		}
		// Trailers in flight when this side reset the stream: checked,
		// so a malformed block still gets its RST_STREAM, else ignored.
		b.trailers, b.target = true, &b.scratch
		if !b.endStream {
			b.bad = http2.ErrCodeProtocol
		}
	default:
		c.maxID = id
		ignore := c.goAwayFinal && id > c.goAwayLast
		refuse := uint32(c.open) >= c.cfg.MaxConcurrentStreams
		c.mu.Unlock()
		switch {
		case ignore:
		case refuse:
			c.streamError(id, http2.ErrCodeRefusedStream)
		case selfDep:
			c.streamError(id, http2.ErrCodeProtocol)
		default:
			b.s = getStream(c, id)
			b.target = &b.s.req
		}
	}
	c.dec.emitOff = b.target == nil
	return c.onFragment(p, f.has(flagEndHeaders))
}

// onFragment decodes one fragment of the block and ends it on END_HEADERS.
func (c *Conn) onFragment(p []byte, end bool) error {
	b := &c.hb
	if bad, err := c.feedBlock(&b.bytes, p, end); err != nil {
		if bad {
			c.dropBlock()
		}
		return err
	}
	if !end {
		return nil
	}
	b.active = false
	switch {
	case b.s != nil:
		c.openStream()
	case b.trailers:
		c.endTrailers()
	}
	return nil
}

func (c *Conn) dropBlock() {
	if s := c.hb.s; s != nil {
		c.hb.s = nil
		putStream(s)
	}
	c.hb.active = false
}

// onField is the HPACK decoder's emit function: it validates one field
// (RFC 9113 section 8.2 and 8.3) and copies it into the block's target.
func (c *Conn) onField(name, value []byte) {
	b := &c.hb
	b.size += len(name) + len(value) + 32
	if b.target == nil || b.bad != 0 || b.tooLarge {
		return
	}
	if b.size > int(c.cfg.MaxHeaderListSize) {
		b.tooLarge = true
		c.dec.emitOff = true // the rest is decoded for the table only
		return
	}
	if !validName(name) || !validValue(value) {
		b.bad = http2.ErrCodeProtocol
		return
	}
	if name[0] == ':' {
		bit := 0
		switch string(name) {
		case headers.Method:
			bit, b.connect = pMethod, string(value) == "CONNECT"
		case headers.Scheme:
			bit = pScheme
		case headers.Path:
			bit = pPath
			if len(value) == 0 {
				b.bad = http2.ErrCodeProtocol
			}
		case headers.Authority:
			bit = pAuthority
		case headers.Protocol:
			bit = pProtocol
			if !c.cfg.AllowExtendedConnect {
				b.bad = http2.ErrCodeProtocol
			}
		}
		if bit == 0 || b.trailers || b.regular || b.pseudo&bit != 0 {
			b.bad = http2.ErrCodeProtocol
			return
		}
		b.pseudo |= bit
	} else {
		b.regular = true
		switch string(name) {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			b.bad = http2.ErrCodeProtocol
			return
		case "te":
			if string(value) != "trailers" {
				b.bad = http2.ErrCodeProtocol
				return
			}
		case "content-length":
			n, ok := parseLength(value)
			if !ok || (b.cl >= 0 && b.cl != n) {
				b.bad = http2.ErrCodeProtocol
				return
			}
			b.cl = n
		case "cookie":
			b.cookies++
		}
	}
	b.target.AddCopy(name, value)
}

// openStream starts a stream whose request headers were just decoded, or
// refuses them.
func (c *Conn) openStream() {
	b := &c.hb
	s := b.s
	b.s = nil
	if b.bad == 0 && !b.tooLarge {
		b.bad = requestPseudoError(b.pseudo, b.connect)
	}
	if b.bad != 0 {
		putStream(s)
		c.streamError(b.id, b.bad)
		return
	}
	if b.tooLarge {
		putStream(s)
		c.refuseTooLarge(b.id, b.endStream)
		return
	}
	if b.cookies > 1 {
		c.scratch = joinCookies(c.scratch[:0], &s.req)
		s.req.Del("cookie")
		s.req.AddBytes("cookie", c.scratch)
	}
	s.contentLength = b.cl
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		putStream(s)
		return
	}
	if b.endStream {
		if s.contentLength > 0 {
			c.mu.Unlock()
			putStream(s)
			c.streamError(b.id, http2.ErrCodeProtocol)
			return
		}
		s.remoteEnded = true
	}
	c.streams[s.id] = s
	s.inMap = true
	c.open++
	c.handlers++
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.mu.Unlock()
	c.dispatch(s)
}

// requestPseudoError checks a request's pseudo-headers (RFC 9113 section
// 8.3.1, RFC 8441 section 4): 0 when they are right.
func requestPseudoError(seen int, connect bool) http2.ErrCode {
	switch {
	case seen&pMethod == 0:
		return http2.ErrCodeProtocol
	case connect && seen&pProtocol != 0:
		if seen&(pScheme|pPath|pAuthority) != pScheme|pPath|pAuthority {
			return http2.ErrCodeProtocol
		}
	case connect:
		if seen&(pScheme|pPath) != 0 || seen&pAuthority == 0 {
			return http2.ErrCodeProtocol
		}
	case seen&pProtocol != 0, seen&(pScheme|pPath) != pScheme|pPath:
		return http2.ErrCodeProtocol
	}
	return 0
}

// endTrailers hands decoded trailers to their stream and ends its request.
func (c *Conn) endTrailers() {
	b := &c.hb
	if b.bad != 0 || b.tooLarge {
		c.streamError(b.id, http2.ErrCodeProtocol)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[b.id]
	if s == nil || s.remoteEnded {
		return
	}
	if s.contentLength >= 0 && s.received != s.contentLength {
		s.resetLocked(http2.ErrCodeProtocol, false)
		return
	}
	s.trailers.CopyFrom(&b.scratch)
	s.remoteEndLocked()
	s.cond.Broadcast()
}

// refuseTooLarge answers a request whose header list is over
// MaxHeaderListSize with 431, as x/net's server does.
func (c *Conn) refuseTooLarge(id uint32, endStream bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.encBuf.Reset()
	_ = c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "431"})
	c.appendHeaderBlockLocked(id, c.encBuf.Bytes(), true)
	if !endStream {
		c.wbuf = appendRST(c.wbuf, id, http2.ErrCodeNo)
		c.noteResetLocked(id, nil)
	}
}

func joinCookies(dst []byte, m *headers.Map) []byte {
	m.Values("cookie", func(v []byte) bool {
		if len(dst) > 0 {
			dst = append(dst, "; "...)
		}
		dst = append(dst, v...)
		return true
	})
	return dst
}

// validName accepts lower-case token characters, and a leading ':'.
func validName[S string | []byte](s S) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9':
		case ch == ':' && i == 0:
		case ch > ' ' && ch < 0x7f && !(ch >= 'A' && ch <= 'Z') && isTokenPunct(ch):
		default:
			return false
		}
	}
	return true
}

func isTokenPunct(ch byte) bool {
	switch ch {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// validValue refuses NUL, CR and LF (RFC 9113 section 8.2.1).
func validValue[S string | []byte](s S) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\r' || c == '\n' {
			return false
		}
	}
	return true
}

func parseLength[S string | []byte](s S) (int64, bool) {
	if len(s) == 0 || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

package http1

import (
	"errors"
	"io"
	"net"
	"strconv"

	"github.com/outrider-proxy/outrider/proxy/buffer"
	"github.com/outrider-proxy/outrider/proxy/headers"
)

const (
	encBuf   = 4 << 10
	bigWrite = 2 << 10 // body slices at least this big go out as their own iovec
)

var (
	crlf          = []byte("\r\n")
	crlfLastChunk = []byte("\r\n0\r\n\r\n")
	lastChunk     = []byte("0\r\n\r\n")
)

var (
	errNoMethod      = errors.New("http1: encode: :method and :path must be set")
	errNoStatus      = errors.New("http1: encode: :status missing or not 3 digits")
	errEncodeInvalid = errors.New("http1: encode: invalid header name or value")
)

// Encoder writes HTTP/1.1 messages to one connection. Small writes are
// buffered in a pooled slice; big body slices go out as separate iovecs in
// one writev with what is buffered. Nothing reaches the writer before Flush
// except when the buffer fills or a big body slice is written. The pooled
// slice is taken by the first write and given back by Flush, so an idle
// connection holds none. The zero Encoder is not usable; get one with
// NewEncoder.
type Encoder struct {
	w    io.Writer
	slab *buffer.Slice // nil when nothing is buffered (after Flush)
	buf  []byte        // slab.Bytes(); nil with slab
	n    int
	iov  net.Buffers
	arr  [3][]byte
	err  error // sticky write error

	chunked   bool // current body is chunk-encoded
	noBody    bool // current body is suppressed (HEAD, 1xx, 204, 304)
	mustClose bool // connection must close after the current response
}

// NewEncoder returns an Encoder writing to w.
func NewEncoder(w io.Writer) *Encoder {
	e := &Encoder{}
	e.Reset(w)
	return e
}

// Reset readies e for another connection, dropping anything unflushed.
func (e *Encoder) Reset(w io.Writer) {
	e.release()
	e.w, e.n, e.err = w, 0, nil
	e.chunked, e.noBody, e.mustClose = false, false, false
}

// Release returns the pooled buffer, dropping anything unflushed; e is
// unusable until Reset.
func (e *Encoder) Release() {
	e.release()
	e.n = 0
	e.w = nil
}

// Buffering reports whether e holds a pooled buffer: between the first write
// of a message and the Flush that sends it.
func (e *Encoder) Buffering() bool { return e.slab != nil }

func (e *Encoder) release() {
	if e.slab != nil {
		e.slab.Release()
		e.slab, e.buf = nil, nil
	}
}

// acquire takes the pooled buffer the writes fill; Flush gives it back.
func (e *Encoder) acquire() {
	if e.slab == nil {
		e.slab = buffer.Get(encBuf)
		e.buf = e.slab.Bytes()
	}
}

// MustClose reports whether the connection has to be closed once the
// current response is written: the request or response asked for it, or
// the body is delimited by the close (HTTP/1.0 client, no content-length).
func (e *Encoder) MustClose() bool { return e.mustClose }

// Flush sends everything buffered in one write and gives the pooled buffer
// back.
func (e *Encoder) Flush() error {
	if e.err == nil && e.n > 0 {
		_, e.err = e.w.Write(e.buf[:e.n])
	}
	e.n = 0
	e.release()
	return e.err
}

func (e *Encoder) put(s string) {
	if e.n+len(s) > len(e.buf) {
		e.spill(len(s))
		if len(s) > len(e.buf) {
			if e.err == nil {
				_, e.err = io.WriteString(e.w, s)
			}
			return
		}
	}
	e.n += copy(e.buf[e.n:], s)
}

func (e *Encoder) putBytes(b []byte) {
	if e.n+len(b) > len(e.buf) {
		e.spill(len(b))
		if len(b) > len(e.buf) {
			if e.err == nil {
				_, e.err = e.w.Write(b)
			}
			return
		}
	}
	e.n += copy(e.buf[e.n:], b)
}

func (e *Encoder) putByte(c byte) {
	if e.n == len(e.buf) {
		e.spill(1)
	}
	e.buf[e.n] = c
	e.n++
}

// spill writes out the buffer to make room.
func (e *Encoder) spill(int) {
	if e.err == nil && e.n > 0 {
		_, e.err = e.w.Write(e.buf[:e.n])
	}
	e.n = 0
}

func (e *Encoder) field(name, value []byte) {
	e.putBytes(name)
	e.put(": ")
	e.putBytes(value)
	e.put("\r\n")
}

// WriteRequestHeaders writes the request line from ":method" and ":path"
// (":authority" for CONNECT), "host" from ":authority" in its place, and
// every other non-pseudo field as is, except transfer-encoding which the
// encoder generates: with a content-length the body is sent as is; else
// when !endStream it is chunked ("transfer-encoding: chunked"; never for
// CONNECT or upgrades); else there is no body and, as Envoy does,
// "content-length: 0" is added unless the method is GET, HEAD, DELETE,
// TRACE or CONNECT.
func (e *Encoder) WriteRequestHeaders(h *headers.Map, endStream bool) error {
	if e.err != nil {
		return e.err
	}
	e.acquire()
	method, ok := h.Get(headers.Method)
	path, okp := h.Get(headers.Path)
	auth, oka := h.Get(headers.Authority)
	connect := string(method) == "CONNECT"
	if !ok || (!connect && !okp) || (connect && !oka) {
		return errNoMethod
	}
	if !isToken(method) || !validValue(path) || !validValue(auth) {
		return errEncodeInvalid
	}
	e.putBytes(method)
	e.putByte(' ')
	if connect {
		e.putBytes(auth)
	} else {
		e.putBytes(path)
	}
	e.put(" HTTP/1.1\r\n")
	sawCL, upgrade, err := e.fields(h)
	if err != nil {
		return err
	}
	e.chunked, e.noBody, e.mustClose = false, false, false
	switch {
	case sawCL || connect || upgrade:
	case !endStream:
		e.put("transfer-encoding: chunked\r\n")
		e.chunked = true
	default:
		switch string(method) {
		case "GET", "HEAD", "DELETE", "TRACE":
		default:
			e.put("content-length: 0\r\n")
		}
	}
	e.put("\r\n")
	return e.err
}

// fields writes the non-pseudo fields of h (":authority" as "host"),
// skipping transfer-encoding, and reports whether content-length was among
// them and whether the message is an upgrade (Upgrade + Connection: upgrade).
func (e *Encoder) fields(h *headers.Map) (sawCL, upgrade bool, err error) {
	var hasUpgrade, connUpgrade bool
	for _, f := range h.Fields() {
		name := f.Name
		if len(name) > 0 && name[0] == ':' {
			if string(name) != headers.Authority {
				continue
			}
			name = hostName
		} else if !isToken(name) {
			return false, false, errEncodeInvalid
		}
		if !validValue(f.Value) {
			return false, false, errEncodeInvalid
		}
		switch string(name) {
		case "transfer-encoding":
			continue
		case "content-length":
			sawCL = true
		case "upgrade":
			hasUpgrade = true
		case "connection":
			connUpgrade = connUpgrade || hasToken(f.Value, "upgrade")
		}
		e.field(name, f.Value)
	}
	return sawCL, hasUpgrade && connUpgrade, nil
}

var hostName = []byte("host")

// WriteResponseHeaders writes the status line ("HTTP/1.0" when req was
// HTTP/1.0, else "HTTP/1.1") with the standard reason phrase, then the
// fields as WriteRequestHeaders does. Framing follows Envoy: content-length
// is kept; 1xx, 204 and 304 get no framing; a headers-only response gets
// "content-length: 0" (not to HEAD); an HTTP/1.0 client gets a body
// delimited by the close; otherwise "transfer-encoding: chunked" (chunk
// encoding not applied to HEAD, upgrades and CONNECT). Body bytes are
// suppressed for HEAD, 1xx, 204 and 304. "connection: close" is added when
// the request did not keep the connection alive (and "connection:
// keep-alive" for a kept-alive HTTP/1.0 client); see MustClose.
func (e *Encoder) WriteResponseHeaders(h *headers.Map, endStream bool, req Message, reqMethod []byte) error {
	if e.err != nil {
		return e.err
	}
	e.acquire()
	sv, _ := h.Get(headers.Status)
	if len(sv) != 3 || sv[0] < '1' || sv[0] > '9' || sv[1] < '0' || sv[1] > '9' || sv[2] < '0' || sv[2] > '9' {
		return errNoStatus
	}
	status := int(sv[0]-'0')*100 + int(sv[1]-'0')*10 + int(sv[2]-'0')
	http10 := req.Major == 1 && req.Minor == 0
	if http10 {
		e.put("HTTP/1.0 ")
	} else {
		e.put("HTTP/1.1 ")
	}
	e.putBytes(sv)
	e.putByte(' ')
	e.put(ReasonPhrase(status))
	e.put("\r\n")
	sawCL, upgrade, err := e.fields(h)
	if err != nil {
		return err
	}
	head := string(reqMethod) == "HEAD"
	connect := string(reqMethod) == "CONNECT" && status >= 200 && status < 300
	e.chunked = false
	e.noBody = head || status < 200 || status == 204 || status == 304
	closeDelimited := false
	switch {
	case sawCL, status < 200, status == 204, status == 304:
	case endStream && !head:
		e.put("content-length: 0\r\n")
	case http10:
		closeDelimited = !head
	default:
		if !connect {
			e.put("transfer-encoding: chunked\r\n")
		}
		e.chunked = !upgrade && !head && !connect
	}
	if status >= 200 {
		connClose := false
		h.Values("connection", func(v []byte) bool {
			connClose = hasToken(v, "close")
			return !connClose
		})
		e.mustClose = connClose || !req.KeepAlive || closeDelimited
		switch {
		case e.mustClose && !connClose:
			e.put("connection: close\r\n")
		case !e.mustClose && http10 && !h.Has("connection"):
			e.put("connection: keep-alive\r\n")
		}
	}
	e.put("\r\n")
	return e.err
}

// Write100Continue writes "HTTP/1.1 100 Continue" (to be flushed).
func (e *Encoder) Write100Continue() error {
	e.acquire()
	e.put("HTTP/1.1 100 Continue\r\n\r\n")
	return e.err
}

// WriteData writes body bytes, chunk-encoded when the body is chunked, and
// the final 0-chunk on endStream. p is never retained: a big p is written
// at once (with what is buffered, one writev), a small one is copied.
func (e *Encoder) WriteData(p []byte, endStream bool) error {
	if e.err != nil {
		return e.err
	}
	if e.noBody {
		return nil
	}
	e.acquire()
	if len(p) > 0 && e.chunked {
		e.putHex(len(p))
		e.put("\r\n")
	}
	if len(p) >= bigWrite {
		e.arr[0], e.arr[1], e.arr[2] = e.buf[:e.n], p, nil
		switch {
		case e.chunked && endStream:
			e.arr[2] = crlfLastChunk
		case e.chunked:
			e.arr[2] = crlf
		}
		e.iov = e.arr[:]
		if e.arr[2] == nil {
			e.iov = e.arr[:2]
		}
		_, e.err = e.iov.WriteTo(e.w)
		e.arr = [3][]byte{}
		e.iov = nil
		e.n = 0
		return e.err
	}
	e.putBytes(p)
	if e.chunked {
		if len(p) > 0 {
			e.put("\r\n")
		}
		if endStream {
			e.putBytes(lastChunk)
		}
	}
	return e.err
}

func (e *Encoder) putHex(n int) {
	var tmp [16]byte
	b := strconv.AppendInt(tmp[:0], int64(n), 16)
	e.putBytes(b)
}

// WriteTrailers ends a chunked body with the last chunk and the trailer
// fields of t. As Envoy does, trailers are dropped when the body is not
// chunk-encoded (the body just ends).
func (e *Encoder) WriteTrailers(t *headers.Map) error {
	if e.err != nil {
		return e.err
	}
	if !e.chunked || e.noBody {
		return nil
	}
	e.acquire()
	e.put("0\r\n")
	for _, f := range t.Fields() {
		if len(f.Name) > 0 && f.Name[0] == ':' {
			continue
		}
		if !isToken(f.Name) || !validValue(f.Value) {
			return errEncodeInvalid
		}
		e.field(f.Name, f.Value)
	}
	e.put("\r\n")
	return e.err
}

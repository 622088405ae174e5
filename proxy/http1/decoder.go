// Package http1 is the proxy's HTTP/1.1 codec (RFC 9112): a zero-copy Decoder
// whose header fields point into pooled read buffers, and an Encoder that
// batches writes into one writev. It rejects every ambiguous framing the way
// Envoy's HTTP/1 codec does (same statuses and response code details), so a
// message it returns can be forwarded without request-smuggling risk.
package http1

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/outrider-proxy/outrider/proxy/buffer"
	"github.com/outrider-proxy/outrider/proxy/headers"
)

// Limits bounds what the Decoder accepts, and selects Envoy's optional
// relaxations. The zero Limits is Envoy's default configuration.
type Limits struct {
	MaxHeaderBytes int // total size of the request/status line + header block; 0 means 60 KiB (Envoy's max_request_headers_kb default)
	MaxHeaders     int // max number of header fields; 0 means 100 (Envoy's max_headers_count default)
	// AcceptHTTP10 accepts HTTP/1.0 requests (Envoy's accept_http_10). When
	// false, as in Envoy by default, they are rejected with 426 "low_version".
	AcceptHTTP10 bool
	// AllowCustomMethods accepts any token as a method (Envoy's
	// allow_custom_methods); when false only Envoy's known methods pass.
	AllowCustomMethods bool
}

const (
	defaultMaxHeaderBytes = 60 << 10
	defaultMaxHeaders     = 100
	initialBuf            = 4 << 10
	minBodyRead           = 2 << 10
	bodyBuf               = 16 << 10
	bigBodyRead           = 16 << 10 // room a read of a large body gets at least
	bigBodyBuf            = 64 << 10 // the buffer a large body is read into
	maxChunkLine          = 4 << 10
	maxEmptyReads         = 100
)

// Message is the framing of one parsed message.
type Message struct {
	Major, Minor   int   // 1.0 or 1.1 (any other HTTP/x.y is reported as 1.0, as Envoy does)
	ContentLength  int64 // -1 when absent
	Chunked        bool  // Transfer-Encoding: chunked (final)
	KeepAlive      bool  // connection persists after this message (version default, Connection: close/keep-alive)
	Expect100      bool  // request had Expect: 100-continue (HTTP/1.1 only)
	Upgrade        bool  // request carries Upgrade + Connection: upgrade (e.g. websocket); response is 101
	NoBody         bool  // message has no body (request without CL/TE or with CL 0; response to HEAD, 1xx, 204, 304)
	CloseDelimited bool  // response body runs until the connection closes
	// Tunnel is set when everything after the headers is an opaque byte
	// stream (an Upgrade or CONNECT request, a 101 response, a 2xx response
	// to CONNECT): ReadData returns those bytes raw until the peer closes.
	Tunnel bool
	// H2CUpgrade reports a request that asked for "Upgrade: h2c". As Envoy
	// does, the decoder has already removed the upgrade and http2-settings
	// headers and the "upgrade"/"http2-settings" Connection tokens, and
	// Upgrade is false: the request is served as plain HTTP/1.1.
	H2CUpgrade bool
	// Connect is set for a CONNECT request (":authority" is the target, no ":path").
	Connect bool
	// Status is the response status code (0 for requests).
	Status int
}

type bodyMode uint8

const (
	bodyDone    bodyMode = iota // no body left (or none): ReadData returns io.EOF
	bodyLength                  // remaining bytes of a Content-Length body
	bodyChunked                 // chunked, state in chunk
	bodyRaw                     // until EOF (close-delimited response or tunnel)
)

type chunkState uint8

const (
	chunkSize chunkState = iota
	chunkData
	chunkDataEnd
	chunkTrailers
)

// Decoder reads HTTP/1 messages from one connection. It is owned by one
// goroutine. The zero Decoder is not usable; get one with NewDecoder.
type Decoder struct {
	r   io.Reader
	lim Limits

	slab *buffer.Slice // current read buffer; nil after Release
	buf  []byte        // slab.Bytes()
	rd   int           // start of unread bytes
	wr   int           // end of unread bytes
	keep int           // buf[:keep] holds the current headers/trailers: never overwritten until the next message
	held *buffer.Slice // previous slab, still referenced by the current headers; nil when none
	scan int           // start of the line being searched for while reading a header/trailer block
	seen int           // buf[scan:seen] holds no LF
	rerr error         // sticky error from r

	mode      bodyMode
	remaining int64 // of the Content-Length body or the current chunk
	chunk     chunkState
	fail      error       // sticky protocol error in the body
	trailers  headers.Map // fields of the last chunked body's trailer section
	released  bool
	isResp    bool // the current message is a response (errors get Status 502)

	// The idle wait without a buffer (see WaitData): raw is the socket
	// under r, nil when r has none (yet); rawSrc is r when it may hand one
	// out later; rawFn is d.rawRead, bound once.
	raw    syscall.RawConn
	rawSrc RawConner
	rawFn  func(fd uintptr) bool
	rawN   int
	rawErr error
}

// RawConner is implemented by a Decoder's reader that passes the bytes of a
// socket through unchanged (a protocol sniffer once it has decided, say):
// RawConn returns that socket, or nil while reads must go through Read.
// A *net.TCPConn needs no wrapper.
type RawConner interface {
	RawConn() syscall.RawConn
}

// NewDecoder returns a Decoder reading from r with the given limits.
func NewDecoder(r io.Reader, lim Limits) *Decoder {
	if lim.MaxHeaderBytes <= 0 {
		lim.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	if lim.MaxHeaders <= 0 {
		lim.MaxHeaders = defaultMaxHeaders
	}
	d := &Decoder{lim: lim}
	d.Reset(r)
	return d
}

// Reset readies d for another connection, dropping any buffered bytes; it
// also makes a Released decoder usable again.
func (d *Decoder) Reset(r io.Reader) {
	d.releaseHeld()
	if d.slab == nil {
		d.slab = buffer.Get(initialBuf)
		d.buf = d.slab.Bytes()
	}
	d.r = r
	d.rd, d.wr, d.keep, d.scan = 0, 0, 0, 0
	d.rerr, d.fail = nil, nil
	d.mode = bodyDone
	d.remaining = 0
	d.chunk = chunkSize
	d.trailers.Reset()
	d.released = false
	d.raw, d.rawSrc = nil, nil
	switch c := r.(type) {
	case *net.TCPConn:
		d.raw, _ = c.SyscallConn()
	case RawConner:
		d.rawSrc = c
	}
}

// Release returns pooled buffers; every slice handed out becomes invalid and
// the decoder is unusable until Reset.
func (d *Decoder) Release() {
	d.releaseHeld()
	if d.slab != nil {
		d.slab.Release()
		d.slab, d.buf = nil, nil
	}
	d.trailers.Reset()
	d.r = nil
	d.raw, d.rawSrc = nil, nil
	d.released = true
}

// Buffered is the number of bytes read from the connection but not yet
// consumed. Once the current body is complete (ReadData returned io.EOF, or
// the message had no body) these are the start of the next pipelined message.
func (d *Decoder) Buffered() int { return d.wr - d.rd }

func (d *Decoder) releaseHeld() {
	if d.held != nil {
		d.held.Release()
		d.held = nil
	}
}

// beginMessage unpins the previous message's bytes and moves what is left
// to the start of the buffer.
func (d *Decoder) beginMessage() error {
	if d.released {
		return errReleased
	}
	if d.mode != bodyDone {
		return errBodyNotConsumed
	}
	d.releaseHeld()
	d.keep = 0
	if d.rd > 0 {
		n := copy(d.buf, d.buf[d.rd:d.wr])
		d.rd, d.wr = 0, n
	}
	d.trailers.Reset()
	d.chunk = chunkSize
	return nil
}

// WaitData blocks until at least one byte of the next message is buffered,
// so the caller can start a timer for the rest of it (Envoy's
// request_headers_timeout starts at the first byte). It returns the read
// error, io.EOF included, when none arrives. When nothing is buffered and
// the reader is a socket (a *net.TCPConn or a RawConner), the decoder gives
// its buffer back to the pool while it waits and takes one again once bytes
// arrive, so an idle keep-alive connection holds no buffer.
func (d *Decoder) WaitData() error {
	if d.wr > d.rd {
		return nil
	}
	if err := d.beginMessage(); err != nil {
		return err
	}
	if d.raw == nil && d.rawSrc != nil {
		if d.raw = d.rawSrc.RawConn(); d.raw != nil {
			d.rawSrc = nil
		}
	}
	if d.raw != nil && d.rerr == nil {
		return d.waitRaw()
	}
	d.makeRoom(1, len(d.buf))
	return d.readMore()
}

// waitRaw reads the first bytes of the next message straight from the
// socket into a buffer taken only once the socket is readable. The buffer
// is empty (beginMessage ran and nothing was buffered).
func (d *Decoder) waitRaw() error {
	d.slab.Release()
	d.slab, d.buf = nil, nil
	d.rd, d.wr = 0, 0
	if d.rawFn == nil {
		d.rawFn = d.rawRead
	}
	d.rawN, d.rawErr = 0, nil
	err := d.raw.Read(d.rawFn)
	if d.slab == nil {
		// The wait failed (deadline, close): the decoder stays usable.
		d.slab = buffer.Get(initialBuf)
		d.buf = d.slab.Bytes()
	}
	if err != nil {
		return err // a deadline is the caller's timer: not sticky
	}
	switch {
	case d.rawErr != nil:
		d.rerr = os.NewSyscallError("read", d.rawErr)
		return d.rerr
	case d.rawN == 0:
		d.rerr = io.EOF
		return d.rerr
	}
	d.wr = d.rawN
	return nil
}

// rawRead is the syscall.RawConn read callback: false (wait for the socket
// to be readable) while the read would block.
func (d *Decoder) rawRead(fd uintptr) bool {
	s := buffer.Get(initialBuf)
	var n int
	var err error
	for range maxEmptyReads {
		if n, err = syscall.Read(int(fd), s.Bytes()); err != syscall.EINTR {
			break
		}
	}
	if err == syscall.EAGAIN {
		s.Release()
		return false
	}
	d.slab, d.buf = s, s.Bytes()
	d.rawN, d.rawErr = max(n, 0), err
	return true
}

// readMore reads once (retrying empty reads) into buf[wr:], which must have room.
func (d *Decoder) readMore() error {
	if d.rerr != nil {
		return d.rerr
	}
	for range maxEmptyReads {
		n, err := d.r.Read(d.buf[d.wr:])
		if n < 0 || n > len(d.buf)-d.wr {
			d.rerr = errors.New("http1: reader returned invalid count")
			return d.rerr
		}
		d.wr += n
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// A deadline is the caller's timer, not the stream's end: the
				// next call resumes with every byte read so far.
				if n > 0 {
					return nil
				}
				return err
			}
			d.rerr = err
			if n > 0 {
				return nil
			}
			return err
		}
		if n > 0 {
			return nil
		}
	}
	d.rerr = io.ErrNoProgress
	return d.rerr
}

// makeRoom ensures at least min free bytes after wr, compacting the unread
// bytes down to keep, or moving them to a bigger slab of at least size bytes
// (the old slab stays alive in held when keep pins it).
func (d *Decoder) makeRoom(min, size int) {
	if len(d.buf)-d.wr >= min {
		return
	}
	if d.rd > d.keep {
		shift := d.rd - d.keep
		copy(d.buf[d.keep:], d.buf[d.rd:d.wr])
		d.rd -= shift
		d.wr -= shift
		d.scan -= shift
		d.seen -= shift
		if len(d.buf)-d.wr >= min {
			return
		}
	}
	unread := d.wr - d.rd
	if size < unread+min {
		size = unread + min
	}
	ns := buffer.Get(size)
	nb := ns.Bytes()
	copy(nb, d.buf[d.rd:d.wr])
	if d.keep > 0 {
		d.held = d.slab // pinned by the current headers: freed at the next message
	} else {
		d.slab.Release()
	}
	d.scan -= d.rd
	d.seen -= d.rd
	d.slab, d.buf = ns, nb
	d.rd, d.wr, d.keep = 0, unread, 0
}

// readBlock buffers a complete header (or trailer) block starting at rd and
// returns its end (just past the empty line). Lines must end in CRLF. limit
// bounds the block size; tooLarge is the error past it. Scanning resumes
// where it stopped, so a block trickling in byte by byte costs O(n).
func (d *Decoder) readBlock(limit int, tooLarge error) (int, error) {
	d.scan, d.seen = d.rd, d.rd // start of the current line; bytes before seen hold no LF
	for {
		for {
			i := bytes.IndexByte(d.buf[d.seen:d.wr], '\n')
			if i < 0 {
				d.seen = d.wr
				break
			}
			end := d.seen + i
			if end == d.scan || d.buf[end-1] != '\r' {
				return 0, errBareLF
			}
			if end-1 == d.scan { // empty line: end of block
				if end+1-d.rd > limit {
					return 0, tooLarge
				}
				return end + 1, nil
			}
			d.scan, d.seen = end+1, end+1
		}
		if d.wr-d.rd > limit {
			return 0, tooLarge
		}
		d.makeRoom(1, 2*len(d.buf))
		if err := d.readMore(); err != nil {
			if err == io.EOF {
				if d.wr == d.rd {
					return 0, io.EOF
				}
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
}

package hcm

import (
	"io"
	"net"
	"os"
	"syscall"

	"github.com/outrider-proxy/outrider/proxy/buffer"
	"github.com/outrider-proxy/outrider/proxy/http1"
)

// h2ReadBuf is the size of a downstream HTTP/2 connection's read buffer.
const h2ReadBuf = 8 << 10

// readBuffer batches the codec's small reads: an idle connection reads
// into a small array (proxy/h2 holds no read buffer while idle), and
// without readBuffer the rest of what the client sent would take another
// syscall. Reading up to h2ReadBuf at a time, the frames a client sent
// together cost one. Only the reading goroutine touches it; the codec
// still gets exactly the bytes it asked for, so the flood limits see the
// same.
//
// The buffer is pooled and given back whenever it is empty: on a plain TCP
// socket the wait for the next bytes happens on the socket itself
// (syscall.RawConn), the buffer taken only once they can be read, so an
// idle connection holds none. Other connections (TLS) wait in Read with it.
type readBuffer struct {
	slab *buffer.Slice // nil while empty
	r, w int           // unread bytes are slab.Bytes()[r:w]
	err  error         // an error that came with the last bytes read, for after them

	raw    syscall.RawConn       // the plain TCP socket under the connection; nil: none, or not known yet
	rawFn  func(fd uintptr) bool // b.rawRead, bound once
	rawN   int
	rawErr error
}

// read fills p from the buffer, or from c when the buffer is empty: a
// large p directly, a small one through the buffer.
func (b *readBuffer) read(c net.Conn, p []byte) (int, error) {
	if b.r < b.w {
		n := copy(p, b.slab.Bytes()[b.r:b.w])
		if b.r += n; b.r == b.w {
			b.release()
		}
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	if len(p) >= h2ReadBuf {
		return c.Read(p)
	}
	if raw := b.rawOf(c); raw != nil {
		return b.waitRaw(raw, p)
	}
	if b.slab == nil {
		b.slab = buffer.Get(h2ReadBuf)
	}
	m, err := c.Read(b.slab.Bytes()[:h2ReadBuf])
	return b.fill(p, m, err)
}

// fill hands p the first of the m bytes just read into the buffer.
func (b *readBuffer) fill(p []byte, m int, err error) (int, error) {
	if m <= 0 {
		b.release()
		return 0, err
	}
	b.err = err
	n := copy(p, b.slab.Bytes()[:m])
	b.r, b.w = n, m
	if n == m {
		b.release()
	}
	return n, nil
}

// rawOf returns the plain TCP socket under c, or nil: c itself, or what a
// wrapper that now passes bytes through unchanged (the preface replay once
// replayed) offers.
func (b *readBuffer) rawOf(c net.Conn) syscall.RawConn {
	if b.raw != nil {
		return b.raw
	}
	switch x := c.(type) {
	case *net.TCPConn:
		b.raw, _ = x.SyscallConn()
	case http1.RawConner:
		b.raw = x.RawConn()
	}
	if b.raw != nil && b.rawFn == nil {
		b.rawFn = b.rawRead
	}
	return b.raw
}

// waitRaw waits for the socket to be readable without a buffer, then reads
// into a pooled one (rawRead).
func (b *readBuffer) waitRaw(raw syscall.RawConn, p []byte) (int, error) {
	b.rawN, b.rawErr = 0, nil
	if err := raw.Read(b.rawFn); err != nil {
		return 0, err // a deadline or a closed connection
	}
	switch {
	case b.rawErr != nil && b.rawN <= 0:
		return b.fill(p, 0, os.NewSyscallError("read", b.rawErr))
	case b.rawN == 0:
		return b.fill(p, 0, io.EOF)
	}
	return b.fill(p, b.rawN, nil)
}

// rawRead reads into a pooled buffer taken for the read and given back if
// the socket had nothing (EAGAIN: the RawConn then waits and calls again).
func (b *readBuffer) rawRead(fd uintptr) bool {
	s := buffer.Get(h2ReadBuf)
	var n int
	var err error
	for {
		if n, err = syscall.Read(int(fd), s.Bytes()[:h2ReadBuf]); err != syscall.EINTR {
			break
		}
	}
	if err == syscall.EAGAIN {
		s.Release()
		return false
	}
	b.slab, b.rawN, b.rawErr = s, max(n, 0), err
	return true
}

// release gives the buffer back; nothing is buffered.
func (b *readBuffer) release() {
	if b.slab != nil {
		b.slab.Release()
		b.slab = nil
	}
	b.r, b.w = 0, 0
}

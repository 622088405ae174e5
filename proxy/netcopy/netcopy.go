// Package netcopy moves bytes between two connections in both directions,
// with the kernel's splice(2) when both are plain TCP sockets and through one
// pooled buffer otherwise. Each direction reports progress after every chunk,
// so idle timeouts and byte counters stay exact without user-space copies.
package netcopy

import (
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/outrider-proxy/outrider/proxy/buffer"
)

// spliceChunk is the most one splice call moves; a pipe holds 64 KiB by default.
const spliceChunk = 64 << 10

// Progress is called after each chunk with its size. It must be cheap.
type Progress func(n int)

// Copy moves src to dst until EOF or an error, calling progress after every
// chunk, and returns the bytes moved. EOF is not an error. It splices when both
// ends are *net.TCPConn.
func Copy(dst, src net.Conn, progress Progress) (int64, error) {
	if d, ok := dst.(*net.TCPConn); ok {
		if s, ok := src.(*net.TCPConn); ok {
			n, err, handled := splice(d, s, progress)
			if handled {
				return n, err
			}
		}
	}
	return copyBuffer(dst, src, progress)
}

func copyBuffer(dst io.Writer, src io.Reader, progress Progress) (int64, error) {
	b := buffer.Get(32 << 10)
	defer b.Release()
	buf := b.Bytes()
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
			if progress != nil {
				progress(n)
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return total, nil
			}
			return total, rerr
		}
	}
}

// splice moves bytes src -> pipe -> dst. handled is false when no pipe could be
// made, and the caller falls back to a buffer.
func splice(dst, src *net.TCPConn, progress Progress) (total int64, err error, handled bool) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return 0, nil, false
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return 0, nil, false
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return 0, nil, false
	}
	const flags = 1 | 2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK
	for {
		var n int64
		var serr error
		rerr := srcRaw.Read(func(fd uintptr) bool {
			for {
				n, serr = syscall.Splice(int(fd), nil, p[1], nil, spliceChunk, flags)
				if serr == syscall.EINTR {
					continue
				}
				return serr != syscall.EAGAIN
			}
		})
		if rerr != nil {
			return total, rerr, true
		}
		if serr != nil {
			return total, &net.OpError{Op: "splice", Net: "tcp", Source: src.LocalAddr(), Addr: src.RemoteAddr(), Err: serr}, true
		}
		if n == 0 {
			return total, nil, true // EOF
		}
		chunk := n
		for n > 0 {
			var m int64
			werr := dstRaw.Write(func(fd uintptr) bool {
				for {
					m, serr = syscall.Splice(p[0], nil, int(fd), nil, int(n), flags)
					if serr == syscall.EINTR {
						continue
					}
					return serr != syscall.EAGAIN
				}
			})
			if werr != nil {
				return total, werr, true
			}
			if serr != nil {
				return total, &net.OpError{Op: "splice", Net: "tcp", Source: dst.LocalAddr(), Addr: dst.RemoteAddr(), Err: serr}, true
			}
			n -= m
		}
		total += chunk
		if progress != nil {
			progress(int(chunk))
		}
	}
}

// CloseWrite half-closes c when it supports it, and closes it otherwise.
func CloseWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

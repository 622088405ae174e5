package hcm

import "net"

// h2ReadBuf is the size of a downstream HTTP/2 connection's read buffer.
const h2ReadBuf = 8 << 10

// readBuffer batches the reads of x/net's HTTP/2 server, which reads its
// connection unbuffered, frame header and payload apart: two syscalls a
// frame. Reading up to h2ReadBuf at a time, the frames a client sent
// together cost one. Only the reading goroutine touches it; x/net still
// gets exactly the bytes it asked for, so the flood limits see the same.
type readBuffer struct {
	buf  []byte // nil until the first small read
	r, w int    // unread bytes are buf[r:w]
	err  error  // an error that came with the last bytes read, for after them
}

// read fills p from the buffer, or from c when the buffer is empty: a
// large p directly, a small one through the buffer.
func (b *readBuffer) read(c net.Conn, p []byte) (int, error) {
	if b.r < b.w {
		n := copy(p, b.buf[b.r:b.w])
		b.r += n
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	if len(p) >= h2ReadBuf {
		return c.Read(p)
	}
	if b.buf == nil {
		b.buf = make([]byte, h2ReadBuf)
	}
	m, err := c.Read(b.buf)
	if m <= 0 {
		return 0, err
	}
	b.err = err
	n := copy(p, b.buf[:m])
	b.r, b.w = n, m
	return n, nil
}

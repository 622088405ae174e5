package listenerfilter

import (
	"net"
	"syscall"
)

// replayConn gives back the bytes a listener filter read ahead before
// reading the connection again.
type replayConn struct {
	net.Conn
	pending []byte
}

// Replay returns c with b to be read first, for a filter that peeked at the
// connection's first bytes (tls_inspector, http_inspector); c itself when b
// is empty. The result's Unwrap returns c, for code that needs the socket
// underneath (original_dst's SO_ORIGINAL_DST, splice).
func Replay(c net.Conn, b []byte) net.Conn {
	if len(b) == 0 {
		return c
	}
	return &replayConn{Conn: c, pending: b}
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Unwrap returns the underlying connection.
func (c *replayConn) Unwrap() net.Conn { return c.Conn }

// RawConn is the plain TCP socket underneath once the read-ahead bytes are
// all read, for readers that wait on the socket itself (the HTTP/1 decoder,
// the HTTP/2 read buffer); nil before that, or when it is not plain TCP.
func (c *replayConn) RawConn() syscall.RawConn {
	if len(c.pending) > 0 {
		return nil
	}
	tc, ok := c.Conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/transport"
)

// xorConn is a toy transport: every byte is XORed with a key both ways,
// after a one-byte "handshake" that must be the key.
type xorConn struct {
	net.Conn
	key byte
}

func (c *xorConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for i := range p[:n] {
		p[i] ^= c.key
	}
	return n, err
}

func (c *xorConn) Write(p []byte) (int, error) {
	q := make([]byte, len(p))
	for i := range p {
		q[i] = p[i] ^ c.key
	}
	return c.Conn.Write(q)
}

type xorTransport struct{ key byte }

func (x xorTransport) Wrap(ctx context.Context, c net.Conn, info *streaminfo.Conn) (net.Conn, error) {
	if d, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(d)
		defer c.SetReadDeadline(time.Time{})
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return nil, err
	}
	if b[0] != x.key {
		return nil, fmt.Errorf("bad handshake byte %d", b[0])
	}
	info.TransportProtocol = "xor"
	return &xorConn{Conn: c, key: x.key}, nil
}

func init() {
	transport.Registry.Register("test.xor", []string{"google.protobuf.Struct"}, transport.Factory{
		Downstream: func(*transport.Context, *anypb.Any) (transport.Downstream, error) {
			return xorTransport{key: 0x5a}, nil
		},
	})
}

// A filter chain's transport socket wraps each accepted connection before
// the network filters; a failed handshake closes the connection and the
// handshake is bounded by transport_socket_connect_timeout.
func TestDownstreamTransportSocket(t *testing.T) {
	echo := startEcho(t)
	yaml := strings.Replace(tcpBootstrap(echo), "    filter_chains:\n    - filters:\n",
		"    filter_chains:\n    - transport_socket: {name: test.xor, typed_config: {\"@type\": type.googleapis.com/google.protobuf.Struct, value: {}}}\n      transport_socket_connect_timeout: 0.2s\n      filters:\n", 1)
	p := servertest.Start(t, yaml)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", p.Addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		return c
	}
	c := dial()
	defer c.Close()
	x := &xorConn{Conn: c, key: 0x5a}
	c.Write([]byte{0x5a})
	io.WriteString(x, "hello")
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(x)
	if string(got) != "HELLOBYE" {
		t.Fatalf("through the transport: %q, want HELLOBYE", got)
	}
	for name, hello := range map[string][]byte{"bad handshake": {0x01}, "no handshake": nil} {
		c := dial()
		c.Write(hello)
		start := time.Now()
		if n, _ := c.Read(make([]byte, 1)); n != 0 {
			t.Errorf("%s: got data", name)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("%s: not closed promptly", name)
		}
		c.Close()
	}
	p.WaitStat("cluster.echo.upstream_cx_total", 1)
}

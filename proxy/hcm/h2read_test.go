package hcm

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// chunkConn returns its chunks one Read at a time, then err; it counts reads.
type chunkConn struct {
	net.Conn
	chunks [][]byte
	err    error
	reads  int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	c.reads++
	if len(c.chunks) == 0 {
		return 0, c.err
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func TestReadBuffer(t *testing.T) {
	frames := bytes.Repeat([]byte("0123456789abcdefg"), 100) // 1,700 bytes
	big := bytes.Repeat([]byte{'x'}, h2ReadBuf+10)
	tests := []struct {
		name      string
		chunks    [][]byte
		sizes     []int // the reads asked for (9-byte headers, payloads)
		wantReads int   // reads of the connection
	}{
		{"frames sent together: one read", [][]byte{frames}, []int{9, 91, 9, 400, 9, 1182}, 1},
		{"split arrival", [][]byte{frames[:50], frames[50:]}, []int{9, 91, 9, 400, 9, 1182}, 2},
		{"a large read goes straight to the connection", [][]byte{big}, []int{h2ReadBuf + 10}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want []byte
			for _, c := range tc.chunks {
				want = append(want, c...)
			}
			c := &chunkConn{chunks: tc.chunks, err: io.EOF}
			var b readBuffer
			var got []byte
			for _, size := range tc.sizes {
				p := make([]byte, size)
				if _, err := io.ReadFull(readerFunc(func(q []byte) (int, error) { return b.read(c, q) }), p); err != nil {
					t.Fatalf("read of %d: %v", size, err)
				}
				got = append(got, p...)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("bytes differ from what the connection returned")
			}
			if _, err := b.read(c, make([]byte, 9)); err != io.EOF {
				t.Fatalf("after the data: %v, want EOF", err)
			}
			if c.reads != tc.wantReads+1 { // +1: the read that saw EOF
				t.Errorf("%d connection reads, want %d", c.reads-1, tc.wantReads)
			}
		})
	}
}

// An error that arrives with data is returned after the data.
func TestReadBufferErrorAfterData(t *testing.T) {
	boom := errors.New("boom")
	c := &errWithDataConn{data: []byte("abcdef"), err: boom}
	var b readBuffer
	p := make([]byte, 4)
	if n, err := b.read(c, p); n != 4 || err != nil || string(p) != "abcd" {
		t.Fatalf("first read: %d %v %q", n, err, p[:n])
	}
	if n, err := b.read(c, p); n != 2 || err != nil || string(p[:n]) != "ef" {
		t.Fatalf("second read: %d %v %q", n, err, p[:n])
	}
	if _, err := b.read(c, p); err != boom {
		t.Fatalf("third read: %v, want boom", err)
	}
}

type errWithDataConn struct {
	net.Conn
	data []byte
	err  error
}

func (c *errWithDataConn) Read(p []byte) (int, error) {
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, c.err
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// On a plain TCP socket the buffer is pooled only while it holds bytes: an
// idle connection (everything read, waiting for more) holds none, and the
// frames sent together still come from one read.
func TestReadBufferIdleHoldsNone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	var b readBuffer
	frames := bytes.Repeat([]byte("f"), 100)
	if _, err := client.Write(frames); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 9)
	if n, err := b.read(server, p); n != 9 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	if b.slab == nil || b.w-b.r != 91 {
		t.Fatalf("after the first 9 bytes: %d buffered (slab %v), want 91", b.w-b.r, b.slab != nil)
	}
	rest := make([]byte, 91)
	if n, err := b.read(server, rest); n != 91 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	if b.slab != nil {
		t.Error("all bytes read but the buffer is still held: an idle connection would keep it")
	}
	// The next read waits on the socket without a buffer, then gets the bytes.
	go func() {
		time.Sleep(20 * time.Millisecond)
		client.Write([]byte("0123456789"))
	}()
	if n, err := b.read(server, p); n != 9 || err != nil || string(p) != "012345678" {
		t.Fatalf("read %d %q, %v", n, p[:n], err)
	}
	client.Close()
	if n, err := b.read(server, p); n != 1 || err != nil {
		t.Fatalf("the last buffered byte: %d, %v", n, err)
	}
	if _, err := b.read(server, p); err != io.EOF {
		t.Fatalf("after the peer closed: %v, want io.EOF", err)
	}
}

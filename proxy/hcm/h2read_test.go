package hcm

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
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
		sizes     []int // the reads asked for, as x/net does (9-byte headers, payloads)
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

package hcm

import (
	"io"
	"net"
	"strings"
	"testing"
)

// The sniffer hands the HTTP/1 decoder its socket for buffer-less idle
// waits only once it passes HTTP/1 bytes through, and only for plain TCP.
func TestSnifferRawConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		name  string
		r     io.Reader
		state uint8
		want  bool
	}{
		{"undecided", c, 0, false},
		{"http1 over tcp", c, 1, true},
		{"http2", c, 2, false},
		{"http1 not a socket", strings.NewReader("x"), 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &sniffer{r: tc.r, state: tc.state}
			if got := s.RawConn() != nil; got != tc.want {
				t.Fatalf("RawConn non-nil %v, want %v", got, tc.want)
			}
		})
	}
}

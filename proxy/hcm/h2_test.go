package hcm

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// The sniffer tells the HTTP/2 preface from HTTP/1 however the bytes are
// split, passing HTTP/1 bytes through and keeping every HTTP/2 byte.
func TestSniffer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		oneBy bool
		h2    bool
	}{
		{"h1", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", false, false},
		{"h1 post starts like PRI", "POST / HTTP/1.1\r\nHost: a\r\n\r\n", true, false},
		{"pri method not preface", "PRI * HTTP/1.1\r\n\r\n", true, false},
		{"h2 whole", h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00", false, true},
		{"h2 byte by byte", h2Preface + "xyz", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tc.in)
			if tc.oneBy {
				r = iotest.OneByteReader(r)
			}
			s := &sniffer{r: r}
			buf := make([]byte, 4096)
			var got []byte
			var err error
			for range 1000 {
				var n int
				n, err = s.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
			if tc.h2 {
				if !errors.Is(err, errH2Preface) || s.state != 2 || len(got) != 0 {
					t.Fatalf("err %v state %d passed %q", err, s.state, got)
				}
				// The replay holds at least the preface, in order.
				if !strings.HasPrefix(tc.in, string(s.saved)) || len(s.saved) < len(h2Preface) {
					t.Fatalf("saved %q", s.saved)
				}
				return
			}
			if err != io.EOF || string(got) != tc.in || s.state != 1 {
				t.Fatalf("err %v state %d passed %q", err, s.state, got)
			}
		})
	}
}

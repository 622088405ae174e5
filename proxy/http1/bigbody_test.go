package http1

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// A large body is read in large pieces (a 64 KiB buffer, at least 16 KiB a
// read), so a megabyte costs tens of reads and pieces, not hundreds; a small
// one keeps the small buffer. Counted with a reader that returns whatever is
// asked for.
func TestLargeBodyReads(t *testing.T) {
	for _, tc := range []struct {
		name      string
		framing   string
		body      int
		maxPieces int
	}{
		{"content-length 1 MiB", "Content-Length: %d\r\n", 1 << 20, (1 << 20) / (16 << 10)},
		{"close-delimited 1 MiB", "", 1 << 20, (1 << 20) / (16 << 10)},
		{"content-length 8 KiB", "Content-Length: %d\r\n", 8 << 10, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := "HTTP/1.1 200 OK\r\n"
			if tc.framing != "" {
				head += fmt.Sprintf(tc.framing, tc.body)
			}
			msg := head + "\r\n" + strings.Repeat("x", tc.body)
			r := &countingReader{r: bytes.NewReader([]byte(msg))}
			d := NewDecoder(r, Limits{})
			var h headers.Map
			if _, err := d.ReadResponseHeaders(&h, []byte("GET")); err != nil {
				t.Fatal(err)
			}
			pieces, got := 0, 0
			for {
				p, err := d.ReadData()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				pieces++
				got += len(p)
			}
			if got != tc.body {
				t.Fatalf("read %d body bytes, want %d", got, tc.body)
			}
			if pieces > tc.maxPieces {
				t.Errorf("%d pieces in %d reads for %d bytes, want at most %d pieces", pieces, r.reads, tc.body, tc.maxPieces)
			}
		})
	}
}

type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

package http1

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// oneByteReader returns one byte per Read, like a peer sending tiny segments.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

// parsed is one decoded message, copied out of the decoder's buffers.
type parsed struct {
	msg      Message
	fields   string // "name: value\n" lines
	body     string
	trailers string
}

func dump(h *headers.Map) string {
	var b strings.Builder
	for _, f := range h.Fields() {
		fmt.Fprintf(&b, "%s: %s\n", f.Name, f.Value)
	}
	return b.String()
}

// readAll reads one message (request when method == "", else the response to
// method) and its body and trailers, bounded to 1<<20 ReadData calls.
func readAll(d *Decoder, method string) (parsed, error) {
	var h headers.Map
	var p parsed
	var err error
	if method == "" {
		p.msg, err = d.ReadRequestHeaders(&h)
	} else {
		p.msg, err = d.ReadResponseHeaders(&h, []byte(method))
	}
	if err != nil {
		return p, err
	}
	p.fields = dump(&h)
	var body strings.Builder
	for range 1 << 20 {
		b, err := d.ReadData()
		if errors.Is(err, io.EOF) {
			if len(b) != 0 {
				return p, errors.New("data returned with io.EOF")
			}
			var t headers.Map
			d.Trailers(&t)
			p.trailers = dump(&t)
			p.body = body.String()
			// Header bytes must still be intact after the body was read.
			if got := dump(&h); got != p.fields {
				return p, fmt.Errorf("headers changed while reading body:\n%s\nvs\n%s", got, p.fields)
			}
			return p, nil
		}
		if err != nil {
			return p, err
		}
		body.Write(b)
	}
	return p, errors.New("body did not end")
}

func decodeString(raw string, lim Limits) (parsed, error) {
	d := NewDecoder(strings.NewReader(raw), lim)
	defer d.Release()
	return readAll(d, "")
}

type headersMap = headers.Map

func itoa(n int) string { return fmt.Sprint(n) }
func hex(n int) string  { return fmt.Sprintf("%x", n) }

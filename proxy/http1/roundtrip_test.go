package http1

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

var update = flag.Bool("update", false, "rewrite golden files")

// reencodeRequest decodes one request from raw, re-encodes it (chunked when
// it had a body of unknown length) and returns the encoding with the parse.
func reencodeRequest(raw []byte, lim Limits) (parsed, []byte, error) {
	d := NewDecoder(bytes.NewReader(raw), lim)
	defer d.Release()
	var h headers.Map
	m, err := d.ReadRequestHeaders(&h)
	if err != nil {
		return parsed{}, nil, err
	}
	p := parsed{msg: m, fields: dump(&h)}
	var out bytes.Buffer
	e := NewEncoder(&out)
	defer e.Release()
	if m.Tunnel {
		return p, nil, errors.New("tunnel")
	}
	if err := e.WriteRequestHeaders(&h, m.NoBody); err != nil {
		return p, nil, fmt.Errorf("encode headers: %w", err)
	}
	var body bytes.Buffer
	for range 1 << 20 {
		b, err := d.ReadData()
		if err == io.EOF {
			break
		}
		if err != nil {
			return p, nil, err
		}
		body.Write(b)
		if err := e.WriteData(b, false); err != nil {
			return p, nil, err
		}
	}
	var tr headers.Map
	d.Trailers(&tr)
	p.body, p.trailers = body.String(), dump(&tr)
	if !m.NoBody {
		if tr.Len() > 0 {
			err = e.WriteTrailers(&tr)
		} else {
			err = e.WriteData(nil, true)
		}
		if err != nil {
			return p, nil, err
		}
	}
	if err := e.Flush(); err != nil {
		return p, nil, err
	}
	return p, out.Bytes(), nil
}

// comparable strips what re-encoding legitimately changes: the Host field
// becomes ":authority" again, framing fields are regenerated.
func normalize(fields string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(fields, "\n") {
		if strings.HasPrefix(l, "transfer-encoding: ") || strings.HasPrefix(l, ":scheme: ") || strings.HasPrefix(l, "content-length: 0\n") {
			continue
		}
		b.WriteString(l)
	}
	return b.String()
}

func TestGoldenRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("testdata/roundtrip/*.in")
	if len(files) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, in := range files {
		t.Run(filepath.Base(in), func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			raw = bytes.ReplaceAll(raw, []byte("\n"), []byte("\r\n"))
			raw = bytes.ReplaceAll(raw, []byte("\\r\\n"), nil) // a line ending "\r\n" literally marks no CRLF
			_, enc, err := reencodeRequest(raw, Limits{AcceptHTTP10: true})
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(in, ".in") + ".golden"
			if *update {
				if err := os.WriteFile(golden, enc, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, want) {
				t.Fatalf("got\n%q\nwant\n%q", enc, want)
			}
			checkReparse(t, raw, enc)
		})
	}
}

// checkReparse asserts the fuzz property: the re-encoded request parses to
// the same method, path, authority, headers, body and trailers.
func checkReparse(t *testing.T, raw, enc []byte) {
	t.Helper()
	p1, _, err := reencodeRequest(raw, Limits{AcceptHTTP10: true, AllowCustomMethods: true})
	if err != nil {
		t.Fatalf("first parse: %v", err)
	}
	p2, _, err := reencodeRequest(enc, Limits{AcceptHTTP10: true, AllowCustomMethods: true})
	if err != nil {
		t.Fatalf("re-parse of %q: %v", enc, err)
	}
	if normalize(p1.fields) != normalize(p2.fields) || p1.body != p2.body || p1.trailers != p2.trailers {
		t.Fatalf("round trip changed the request:\n%q %q %q\n%q %q %q", p1.fields, p1.body, p1.trailers, p2.fields, p2.body, p2.trailers)
	}
}

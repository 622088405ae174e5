package decompressor_test

import (
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	brv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/decompressor/v3"
	gzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/decompressor/v3"
	zsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/decompressor/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/filters/http/decompressor"
	_ "github.com/outrider-proxy/outrider/filters/http/decompressor/brotli"
	_ "github.com/outrider-proxy/outrider/filters/http/decompressor/gzip"
	_ "github.com/outrider-proxy/outrider/filters/http/decompressor/zstd"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// text is 12000 bytes of words in a pseudo-random order: compressible, but
// no piece decodes to more than 100 times its size.
var text = func() string {
	words := strings.Fields("a decompressed body arrives piece by piece through the filter chain of outrider")
	var b strings.Builder
	x := uint32(1)
	for b.Len() < 12000 {
		x = x*1664525 + 1013904223
		b.WriteString(words[x>>24%uint32(len(words))])
		b.WriteByte(' ')
	}
	return b.String()[:12000]
}()

func compress(t testing.TB, enc string, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	switch enc {
	case "gzip":
		w := stdgzip.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
	case "br":
		w := brotli.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
	case "zstd":
		w, _ := zstd.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
	}
	return b.Bytes()
}

func library(t testing.TB, name string, cfg proto.Message, store *stats.Store) decompressor.Library {
	t.Helper()
	a, err := anypb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := decompressor.Libraries.Lookup(name, a.GetTypeUrl())
	if err != nil {
		t.Fatal(err)
	}
	lib, err := lf(a, decompressor.Scope{Store: store, Prefix: "p.decompressor.lib."})
	if err != nil {
		t.Fatal(err)
	}
	return lib
}

var libs = []struct {
	name, encoding string
	cfg            proto.Message
	errStat        string
}{
	{"envoy.compression.gzip.decompressor", "gzip", &gzv3.Gzip{}, "gzip.decompressor_library.zlib_data_error"},
	{"envoy.compression.brotli.decompressor", "br", &brv3.Brotli{}, "brotli.decompressor_library.brotli_error"},
	{"envoy.compression.zstd.decompressor", "zstd", &zsv3.Zstd{}, "zstd.decompressor_library.zstd_generic_error"},
}

// Every split of the compressed body into pieces decodes to the same text,
// with each stream reused from the library's pool.
func TestPieces(t *testing.T) {
	for _, l := range libs {
		t.Run(l.encoding, func(t *testing.T) {
			store := stats.NewStore()
			lib := library(t, l.name, l.cfg, store)
			z := compress(t, l.encoding, text)
			for _, size := range []int{1, 7, 100, len(z)} {
				d := lib.NewDecompressor()
				var got []byte
				for i := 0; i < len(z); i += size {
					got = append(got, d.Decompress(z[i:min(i+size, len(z))], false)...)
				}
				got = append(got, d.Decompress(nil, true)...)
				d.Release()
				if v, _ := store.Value("p.decompressor.lib." + l.errStat); v != 0 {
					t.Fatalf("pieces of %d: %s = %d", size, l.errStat, v)
				}
				if string(got) != text {
					t.Fatalf("pieces of %d: got %d bytes, want %d", size, len(got), len(text))
				}
			}
			if v, _ := store.Value("p.decompressor.lib." + l.errStat); v != 0 {
				t.Errorf("%s = %d", l.errStat, v)
			}
		})
	}
}

// Corrupt input counts the library's error, passes on what decoded before
// it, and counts again for each later piece; a stream released mid-body
// comes back usable.
func TestCorruptAndRelease(t *testing.T) {
	for _, l := range libs {
		t.Run(l.encoding, func(t *testing.T) {
			store := stats.NewStore()
			lib := library(t, l.name, l.cfg, store)
			z := compress(t, l.encoding, text)
			bad := []byte(strings.Repeat("not a compressed body at all ", 8))
			d := lib.NewDecompressor()
			out := d.Decompress(bad, false)
			if len(out) != 0 {
				t.Errorf("corrupt body decoded to %d bytes", len(out))
			}
			d.Decompress([]byte("more"), false)
			d.Decompress(nil, true)
			d.Release()
			if v, _ := store.Value("p.decompressor.lib." + l.errStat); v != 2 {
				t.Errorf("%s = %d, want 2", l.errStat, v)
			}
			d = lib.NewDecompressor()
			d.Decompress(z[:len(z)/2], false) // left waiting for input
			d.Release()
			d = lib.NewDecompressor()
			got := append(d.Decompress(z, false), d.Decompress(nil, true)...)
			d.Release()
			if string(got) != text {
				t.Fatalf("after release: got %d bytes", len(got))
			}
		})
	}
}

// A decompression bomb stops at max_inflate_ratio times the piece (plus the
// window Go holds back) and counts zlib_data_error.
func TestInflateRatio(t *testing.T) {
	zeros := strings.Repeat("\x00", 4<<20)
	z := compress(t, "gzip", zeros)
	for _, tc := range []struct {
		ratio   uint32
		errors  int64
		maxOut  int
		wantAll bool
	}{
		{100, 1, 100*len(z) + 32<<10 + 4096, false},
		{0, 1, 100*len(z) + 32<<10 + 4096, false}, // Envoy's default is 100
	} {
		store := stats.NewStore()
		cfg := &gzv3.Gzip{}
		if tc.ratio > 0 {
			cfg.MaxInflateRatio = wrapperspb.UInt32(tc.ratio)
		}
		d := library(t, "envoy.compression.gzip.decompressor", cfg, store).NewDecompressor()
		out := len(d.Decompress(z, true))
		d.Release()
		if out > tc.maxOut || out == 0 {
			t.Errorf("ratio %d: %d bytes out of %d", tc.ratio, out, len(z))
		}
		if v, _ := store.Value("p.decompressor.lib.gzip.decompressor_library.zlib_data_error"); v != tc.errors {
			t.Errorf("ratio %d: zlib_data_error %d, want %d", tc.ratio, v, tc.errors)
		}
	}
}

// Input after the end of the encoded stream: ignored by gzip (one member,
// as zlib), counted by brotli as redundant input.
func TestAfterEnd(t *testing.T) {
	for _, tc := range []struct {
		lib  int
		want map[string]int64
	}{
		{0, map[string]int64{"gzip.decompressor_library.zlib_data_error": 0}},
		{1, map[string]int64{"brotli.decompressor_library.brotli_error": 1, "brotli.decompressor_library.brotli_redundant_input": 1}},
	} {
		l := libs[tc.lib]
		store := stats.NewStore()
		d := library(t, l.name, l.cfg, store).NewDecompressor()
		got := string(d.Decompress(compress(t, l.encoding, text), false))
		got += string(d.Decompress([]byte("trailing bytes"), false))
		got += string(d.Decompress(nil, true))
		d.Release()
		if got != text {
			t.Errorf("%s: %d bytes", l.encoding, len(got))
		}
		for name, want := range tc.want {
			if v, _ := store.Value("p.decompressor.lib." + name); v != want {
				t.Errorf("%s = %d, want %d", name, v, want)
			}
		}
	}
}

// flusher is a compressing writer that can flush.
type flusher interface {
	io.WriteCloser
	Flush() error
}

func newWriter(enc string, w io.Writer) flusher {
	switch enc {
	case "br":
		return brotli.NewWriter(w)
	case "zstd":
		zw, _ := zstd.NewWriter(w)
		return zw
	}
	return stdgzip.NewWriter(w)
}

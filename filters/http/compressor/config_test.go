package compressor_test

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	brotliv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/compressor/v3"
	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	zstdv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/compressor/v3"
	compv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/filters/http/compressor"
	_ "github.com/outrider-proxy/outrider/filters/http/compressor/brotli"
	_ "github.com/outrider-proxy/outrider/filters/http/compressor/gzip"
	_ "github.com/outrider-proxy/outrider/filters/http/compressor/zstd"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Broken configs fail naming the field; unimplemented fields are refused.
func TestConfigErrors(t *testing.T) {
	lib := func(m proto.Message) *corev3.TypedExtensionConfig {
		return &corev3.TypedExtensionConfig{Name: "l", TypedConfig: mustAny(t, m)}
	}
	tests := []struct {
		name string
		cfg  *compv3.Compressor
		want string // "" for valid
	}{
		{"gzip defaults", &compv3.Compressor{CompressorLibrary: lib(&gzipv3.Gzip{})}, ""},
		{"no library", &compv3.Compressor{}, "compressor_library: required"},
		{"unknown library", &compv3.Compressor{CompressorLibrary: lib(&wrapperspb.BoolValue{})}, "compressor_library"},
		{"gzip window_bits", &compv3.Compressor{CompressorLibrary: lib(&gzipv3.Gzip{WindowBits: wrapperspb.UInt32(8)})}, "window_bits"},
		{"gzip memory_level", &compv3.Compressor{CompressorLibrary: lib(&gzipv3.Gzip{MemoryLevel: wrapperspb.UInt32(10)})}, "memory_level"},
		{"gzip chunk_size", &compv3.Compressor{CompressorLibrary: lib(&gzipv3.Gzip{ChunkSize: wrapperspb.UInt32(100)})}, "chunk_size"},
		{"gzip strategy", &compv3.Compressor{CompressorLibrary: lib(&gzipv3.Gzip{CompressionStrategy: gzipv3.Gzip_RLE})}, "compression_strategy"},
		{"gzip huffman only", &compv3.Compressor{CompressorLibrary: lib(&gzipv3.Gzip{CompressionStrategy: gzipv3.Gzip_HUFFMAN_ONLY})}, ""},
		{"brotli quality", &compv3.Compressor{CompressorLibrary: lib(&brotliv3.Brotli{Quality: wrapperspb.UInt32(12)})}, "quality"},
		{"brotli encoder_mode", &compv3.Compressor{CompressorLibrary: lib(&brotliv3.Brotli{EncoderMode: brotliv3.Brotli_TEXT})}, "encoder_mode: field not supported"},
		{"zstd dictionary", &compv3.Compressor{CompressorLibrary: lib(&zstdv3.Zstd{Dictionary: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "d"}}})}, "dictionary: field not supported"},
		{"zstd strategy", &compv3.Compressor{CompressorLibrary: lib(&zstdv3.Zstd{Strategy: zstdv3.Zstd_BTOPT})}, "strategy: field not supported"},
		{"status header", &compv3.Compressor{CompressorLibrary: lib(&gzipv3.Gzip{}),
			ResponseDirectionConfig: &compv3.Compressor_ResponseDirectionConfig{StatusHeaderEnabled: true}}, "response_direction_config.status_header_enabled: field not supported"},
		{"bad status code", &compv3.Compressor{CompressorLibrary: lib(&gzipv3.Gzip{}),
			ResponseDirectionConfig: &compv3.Compressor_ResponseDirectionConfig{UncompressibleResponseCodes: []uint32{42}}}, "uncompressible_response_codes[0]"},
	}
	f, err := httpfilter.Registry.Lookup(compressor.Name, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.Create(&httpfilter.Context{Stats: stats.NewStore(), StatPrefix: "http.x."}, mustAny(t, tc.cfg))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Each library's output decodes back, piece by piece flushes included.
func TestLibrariesRoundTrip(t *testing.T) {
	for _, m := range []proto.Message{&gzipv3.Gzip{}, &brotliv3.Brotli{}, &zstdv3.Zstd{EnableChecksum: true}} {
		a := mustAny(t, m)
		lf, err := compressor.Libraries.Lookup("", a.GetTypeUrl())
		if err != nil {
			t.Fatal(err)
		}
		lib, err := lf(a)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(lib.Encoding(), func(t *testing.T) {
			// Twice: the second compressor comes from the pool.
			for range 2 {
				c := lib.NewCompressor()
				var out []byte
				for i := 0; i < len(body); i += 1000 {
					p, err := c.Compress([]byte(body[i:i+1000]), false)
					if err != nil {
						t.Fatal(err)
					}
					if len(p) == 0 {
						t.Fatal("a flushed piece produced no output")
					}
					out = append(out, p...)
				}
				p, err := c.Compress(nil, true)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, p...)
				c.Release()
				if got := decode(t, lib.Encoding(), out); got != body {
					t.Fatalf("decoded %d bytes, want %d", len(got), len(body))
				}
			}
		})
	}
}

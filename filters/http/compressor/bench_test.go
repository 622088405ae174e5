package compressor_test

import (
	"testing"

	brotliv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/compressor/v3"
	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	zstdv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/compressor/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/filters/http/compressor"
)

// BenchmarkLibraries compresses a body of four 4000-byte pieces, each flushed, with a
// pooled compressor, as one response does.
func BenchmarkLibraries(b *testing.B) {
	piece := []byte(body)
	for _, m := range []proto.Message{&gzipv3.Gzip{}, &brotliv3.Brotli{}, &zstdv3.Zstd{}} {
		a := mustAny(b, m)
		lf, err := compressor.Libraries.Lookup("", a.GetTypeUrl())
		if err != nil {
			b.Fatal(err)
		}
		lib, err := lf(a)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(lib.Encoding(), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(4 * int64(len(piece)))
			for b.Loop() {
				c := lib.NewCompressor()
				for i := range 4 {
					if _, err := c.Compress(piece, i == 3); err != nil {
						b.Fatal(err)
					}
				}
				c.Release()
			}
		})
	}
}

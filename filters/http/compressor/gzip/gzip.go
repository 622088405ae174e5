// Package gzip is Envoy's gzip compressor library
// (envoy.compression.gzip.compressor) for the compressor filter, on Go's
// compress/gzip. compression_level and the HUFFMAN_ONLY strategy map onto
// flate levels; memory_level, window_bits and chunk_size are validated as
// Envoy does but Go's deflate always uses its 32 KiB window, so only the
// compression ratio differs from zlib's output, never the format.
package gzip

import (
	"compress/flate"
	stdgzip "compress/gzip"
	"fmt"
	"io"

	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/compressor"
	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.gzip.compressor"

func init() {
	compressor.Libraries.Register(Name, []string{"envoy.extensions.compression.gzip.compressor.v3.Gzip"}, create)
}

func create(a *anypb.Any) (compressor.Library, error) {
	m := &gzipv3.Gzip{}
	if err := coding.Decode(a, m, "memory_level", "compression_level", "compression_strategy", "window_bits", "chunk_size"); err != nil {
		return nil, err
	}
	if v := m.GetMemoryLevel(); v != nil && (v.GetValue() < 1 || v.GetValue() > 9) {
		return nil, fmt.Errorf("memory_level: %d not in [1, 9]", v.GetValue())
	}
	if v := m.GetWindowBits(); v != nil && (v.GetValue() < 9 || v.GetValue() > 15) {
		return nil, fmt.Errorf("window_bits: %d not in [9, 15]", v.GetValue())
	}
	chunk, err := coding.ChunkSize(m.GetChunkSize())
	if err != nil {
		return nil, err
	}
	level := int(m.GetCompressionLevel())
	if level == 0 { // DEFAULT_COMPRESSION is zlib's Z_DEFAULT_COMPRESSION, level 6
		level = flate.DefaultCompression
	}
	if level < 1 && level != flate.DefaultCompression || level > 9 {
		return nil, fmt.Errorf("compression_level: %d not supported", m.GetCompressionLevel())
	}
	switch m.GetCompressionStrategy() {
	case gzipv3.Gzip_DEFAULT_STRATEGY:
	case gzipv3.Gzip_HUFFMAN_ONLY:
		level = flate.HuffmanOnly
	default:
		return nil, fmt.Errorf("compression_strategy: %v not supported by outrider yet", m.GetCompressionStrategy())
	}
	return compressor.NewPooled("gzip", "gzip.", chunk, func(w io.Writer) *stdgzip.Writer {
		z, _ := stdgzip.NewWriterLevel(w, level) // the level was checked
		return z
	}), nil
}

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
	"sync"

	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/compressor"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.gzip.compressor"

func init() {
	compressor.Libraries.Register(Name, []string{"envoy.extensions.compression.gzip.compressor.v3.Gzip"}, create)
}

// library is one compiled Gzip config; pool reuses stream writers.
type library struct {
	level int
	chunk int
	pool  sync.Pool
}

func create(a *anypb.Any) (compressor.Library, error) {
	m := &gzipv3.Gzip{}
	if a != nil {
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	if err := confcheck.Fields(m, "", "memory_level", "compression_level", "compression_strategy", "window_bits", "chunk_size"); err != nil {
		return nil, err
	}
	if v := m.GetMemoryLevel(); v != nil && (v.GetValue() < 1 || v.GetValue() > 9) {
		return nil, fmt.Errorf("memory_level: %d not in [1, 9]", v.GetValue())
	}
	if v := m.GetWindowBits(); v != nil && (v.GetValue() < 9 || v.GetValue() > 15) {
		return nil, fmt.Errorf("window_bits: %d not in [9, 15]", v.GetValue())
	}
	l := &library{level: int(m.GetCompressionLevel()), chunk: 4096}
	if v := m.GetChunkSize(); v != nil {
		if v.GetValue() < 4096 || v.GetValue() > 65536 {
			return nil, fmt.Errorf("chunk_size: %d not in [4096, 65536]", v.GetValue())
		}
		l.chunk = int(v.GetValue())
	}
	if l.level == 0 { // DEFAULT_COMPRESSION is zlib's Z_DEFAULT_COMPRESSION, level 6
		l.level = flate.DefaultCompression
	}
	if l.level < 1 && l.level != flate.DefaultCompression || l.level > 9 {
		return nil, fmt.Errorf("compression_level: %d not supported", m.GetCompressionLevel())
	}
	switch m.GetCompressionStrategy() {
	case gzipv3.Gzip_DEFAULT_STRATEGY:
	case gzipv3.Gzip_HUFFMAN_ONLY:
		l.level = flate.HuffmanOnly
	default:
		return nil, fmt.Errorf("compression_strategy: %v not supported by outrider yet", m.GetCompressionStrategy())
	}
	return l, nil
}

func (l *library) Encoding() string    { return "gzip" }
func (l *library) StatsPrefix() string { return "gzip." }

// stream is one body's gzip writer and its output.
type stream struct {
	lib  *library
	sink compressor.Sink
	w    *stdgzip.Writer
}

func (l *library) NewCompressor() compressor.Compressor {
	if s, ok := l.pool.Get().(*stream); ok {
		s.w.Reset(&s.sink)
		return s
	}
	s := &stream{lib: l}
	s.sink.Grow(l.chunk)
	s.w, _ = stdgzip.NewWriterLevel(&s.sink, l.level) // the level was checked
	return s
}

// Compress writes p and flushes (zlib's Z_SYNC_FLUSH), or closes the gzip
// stream (Z_FINISH) at the end.
func (s *stream) Compress(p []byte, end bool) ([]byte, error) {
	if len(p) > 0 {
		if _, err := s.w.Write(p); err != nil {
			return nil, err
		}
	}
	var err error
	if end {
		err = s.w.Close()
	} else {
		err = s.w.Flush()
	}
	return s.sink.Take(), err
}

func (s *stream) Release() {
	s.sink.Take()
	s.lib.pool.Put(s)
}

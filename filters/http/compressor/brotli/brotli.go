// Package brotli is Envoy's brotli compressor library
// (envoy.compression.brotli.compressor) for the compressor filter, on
// github.com/andybalholm/brotli: quality and window_bits as Envoy's defaults
// (3 and 18), each piece flushed and the stream finished at its end.
// encoder_mode, input_block_bits and disable_literal_context_modeling are
// refused.
package brotli

import (
	"fmt"
	"sync"

	"github.com/andybalholm/brotli"
	brotliv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/compressor/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/compressor"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.brotli.compressor"

func init() {
	compressor.Libraries.Register(Name, []string{"envoy.extensions.compression.brotli.compressor.v3.Brotli"}, create)
}

// library is one compiled Brotli config; pool reuses stream writers.
type library struct {
	opts  brotli.WriterOptions
	chunk int
	pool  sync.Pool
}

func create(a *anypb.Any) (compressor.Library, error) {
	m := &brotliv3.Brotli{}
	if a != nil {
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	if err := confcheck.Fields(m, "", "quality", "window_bits", "chunk_size"); err != nil {
		return nil, err
	}
	l := &library{opts: brotli.WriterOptions{Quality: 3, LGWin: 18}, chunk: 4096}
	if v := m.GetQuality(); v != nil {
		if v.GetValue() > 11 {
			return nil, fmt.Errorf("quality: %d not in [0, 11]", v.GetValue())
		}
		l.opts.Quality = int(v.GetValue())
	}
	if v := m.GetWindowBits(); v != nil {
		if v.GetValue() < 10 || v.GetValue() > 24 {
			return nil, fmt.Errorf("window_bits: %d not in [10, 24]", v.GetValue())
		}
		l.opts.LGWin = int(v.GetValue())
	}
	if v := m.GetChunkSize(); v != nil {
		if v.GetValue() < 4096 || v.GetValue() > 65536 {
			return nil, fmt.Errorf("chunk_size: %d not in [4096, 65536]", v.GetValue())
		}
		l.chunk = int(v.GetValue())
	}
	return l, nil
}

func (l *library) Encoding() string    { return "br" }
func (l *library) StatsPrefix() string { return "brotli." }

// stream is one body's brotli writer and its output.
type stream struct {
	lib  *library
	sink compressor.Sink
	w    *brotli.Writer
}

func (l *library) NewCompressor() compressor.Compressor {
	if s, ok := l.pool.Get().(*stream); ok {
		s.w.Reset(&s.sink)
		return s
	}
	s := &stream{lib: l}
	s.sink.Grow(l.chunk)
	s.w = brotli.NewWriterOptions(&s.sink, l.opts)
	return s
}

// Compress writes p and flushes (BROTLI_OPERATION_FLUSH), or finishes the
// stream (BROTLI_OPERATION_FINISH) at the end.
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

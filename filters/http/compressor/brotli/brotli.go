// Package brotli is Envoy's brotli compressor library
// (envoy.compression.brotli.compressor) for the compressor filter, on
// github.com/andybalholm/brotli: quality and window_bits as Envoy's defaults
// (3 and 18), each piece flushed and the stream finished at its end.
// encoder_mode, input_block_bits and disable_literal_context_modeling are
// refused.
package brotli

import (
	"fmt"
	"io"

	"github.com/andybalholm/brotli"
	brotliv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/compressor/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/compressor"
	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.brotli.compressor"

func init() {
	compressor.Libraries.Register(Name, []string{"envoy.extensions.compression.brotli.compressor.v3.Brotli"}, create)
}

func create(a *anypb.Any) (compressor.Library, error) {
	m := &brotliv3.Brotli{}
	if err := coding.Decode(a, m, "quality", "window_bits", "chunk_size"); err != nil {
		return nil, err
	}
	opts := brotli.WriterOptions{Quality: 3, LGWin: 18}
	if v := m.GetQuality(); v != nil {
		if v.GetValue() > 11 {
			return nil, fmt.Errorf("quality: %d not in [0, 11]", v.GetValue())
		}
		opts.Quality = int(v.GetValue())
	}
	if v := m.GetWindowBits(); v != nil {
		if v.GetValue() < 10 || v.GetValue() > 24 {
			return nil, fmt.Errorf("window_bits: %d not in [10, 24]", v.GetValue())
		}
		opts.LGWin = int(v.GetValue())
	}
	chunk, err := coding.ChunkSize(m.GetChunkSize())
	if err != nil {
		return nil, err
	}
	return compressor.NewPooled("br", "brotli.", chunk, func(w io.Writer) *brotli.Writer {
		return brotli.NewWriterOptions(w, opts)
	}), nil
}

// Package brotli is Envoy's brotli decompressor library
// (envoy.compression.brotli.decompressor) for the decompressor filter, on
// github.com/andybalholm/brotli: Envoy's fixed 100x bound against
// decompression bombs, pieces after the end of the brotli stream counted as
// brotli_redundant_input (bytes after the end within the piece that ends it
// are dropped silently: the Go decoder cannot tell them from its own
// buffering), chunk_size as the read size.
// disable_ring_buffer_reallocation is accepted: the Go decoder sizes its
// ring buffer from the stream's window at once, which is what the option
// asks of the C decoder.
package brotli

import (
	"io"

	"github.com/andybalholm/brotli"
	brv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/decompressor/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/decompressor"
	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.brotli.decompressor"

func init() {
	decompressor.Libraries.Register(Name, []string{"envoy.extensions.compression.brotli.decompressor.v3.Brotli"}, create)
}

// maxInflateRatio is Envoy's MaxInflateRatio for brotli.
const maxInflateRatio = 100

func create(a *anypb.Any, s decompressor.Scope) (decompressor.Library, error) {
	m := &brv3.Brotli{}
	if err := coding.Decode(a, m, "disable_ring_buffer_reallocation", "chunk_size"); err != nil {
		return nil, err
	}
	chunk, err := coding.ChunkSize(m.GetChunkSize())
	if err != nil {
		return nil, err
	}
	l := decompressor.NewPooled("br", "brotli.", func() decompressor.Decoder { return &reader{} })
	brotliError := s.Counter(l, "brotli_error")
	outputOverflow := s.Counter(l, "brotli_output_overflow")
	redundantInput := s.Counter(l, "brotli_redundant_input")
	l.Config = decompressor.StreamConfig{
		Chunk: chunk, MaxRatio: maxInflateRatio, Slack: chunk,
		OnError: func(error) { brotliError.Inc() },
		Ended:   func(err error) bool { return err.Error() == "brotli: excessive input" },
		AfterEnd: func() {
			brotliError.Inc()
			redundantInput.Inc()
		},
		OnOverflow: func() {
			brotliError.Inc()
			outputOverflow.Inc()
		},
	}
	return l, nil
}

// reader adapts brotli.Reader's Reset to the Decoder interface.
type reader struct{ br *brotli.Reader }

func (r *reader) Reset(src io.Reader) error {
	if r.br == nil {
		r.br = brotli.NewReader(src)
		return nil
	}
	return r.br.Reset(src)
}

func (r *reader) Read(p []byte) (int, error) { return r.br.Read(p) }

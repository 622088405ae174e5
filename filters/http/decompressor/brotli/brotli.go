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
	"fmt"
	"io"
	"sync"

	"github.com/andybalholm/brotli"
	brv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/decompressor/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/decompressor"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.brotli.decompressor"

func init() {
	decompressor.Libraries.Register(Name, []string{"envoy.extensions.compression.brotli.decompressor.v3.Brotli"}, create)
}

// maxInflateRatio is Envoy's MaxInflateRatio for brotli.
const maxInflateRatio = 100

// library is one compiled Brotli config; pool reuses streams.
type library struct {
	chunk int
	pool  sync.Pool

	brotliError, outputOverflow, redundantInput *stats.Counter
}

func create(a *anypb.Any, s decompressor.Scope) (decompressor.Library, error) {
	m := &brv3.Brotli{}
	if a != nil {
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	if err := confcheck.Fields(m, "", "disable_ring_buffer_reallocation", "chunk_size"); err != nil {
		return nil, err
	}
	l := &library{chunk: 4096}
	if v := m.GetChunkSize(); v != nil {
		if v.GetValue() < 4096 || v.GetValue() > 65536 {
			return nil, fmt.Errorf("chunk_size: %d not in [4096, 65536]", v.GetValue())
		}
		l.chunk = int(v.GetValue())
	}
	l.brotliError = s.Counter(l, "brotli_error")
	l.outputOverflow = s.Counter(l, "brotli_output_overflow")
	l.redundantInput = s.Counter(l, "brotli_redundant_input")
	return l, nil
}

func (l *library) Encoding() string    { return "br" }
func (l *library) StatsPrefix() string { return "brotli." }

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

// stream is one body's decoder.
type stream struct {
	lib *library
	*decompressor.Stream
}

func (l *library) NewDecompressor() decompressor.Decompressor {
	if s, ok := l.pool.Get().(*stream); ok {
		return s
	}
	return &stream{lib: l, Stream: decompressor.NewStream(&reader{}, decompressor.StreamConfig{
		Chunk: l.chunk, MaxRatio: maxInflateRatio, Slack: l.chunk,
		OnError: func(error) { l.brotliError.Inc() },
		Ended:   func(err error) bool { return err.Error() == "brotli: excessive input" },
		AfterEnd: func() {
			l.brotliError.Inc()
			l.redundantInput.Inc()
		},
		OnOverflow: func() {
			l.brotliError.Inc()
			l.outputOverflow.Inc()
		},
	})}
}

func (s *stream) Release() {
	s.Stream.Reset()
	s.lib.pool.Put(s)
}

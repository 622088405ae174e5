// Package zstd is Envoy's zstd decompressor library
// (envoy.compression.zstd.decompressor) for the decompressor filter, on
// github.com/klauspost/compress/zstd decoding synchronously, with libzstd's
// default window limit (2^27 bytes) and chunk_size as the read size.
// dictionaries are refused for now. Envoy puts no bound on a zstd piece's
// output; outrider bounds it to 1000 times the piece plus 1 MiB (counted as
// zstd_generic_error) so a small bomb cannot take the memory.
package zstd

import (
	"errors"
	"fmt"
	"io"
	"sync"

	zstdv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/decompressor/v3"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/decompressor"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.zstd.decompressor"

func init() {
	decompressor.Libraries.Register(Name, []string{"envoy.extensions.compression.zstd.decompressor.v3.Zstd"}, create)
}

// library is one compiled Zstd config; pool reuses streams.
type library struct {
	chunk int
	pool  sync.Pool

	genericError, dictionaryError, checksumError *stats.Counter
}

func create(a *anypb.Any, s decompressor.Scope) (decompressor.Library, error) {
	m := &zstdv3.Zstd{}
	if a != nil {
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	if err := confcheck.Fields(m, "", "chunk_size"); err != nil {
		return nil, err
	}
	l := &library{chunk: 4096}
	if v := m.GetChunkSize(); v != nil {
		if v.GetValue() < 4096 || v.GetValue() > 65536 {
			return nil, fmt.Errorf("chunk_size: %d not in [4096, 65536]", v.GetValue())
		}
		l.chunk = int(v.GetValue())
	}
	l.genericError = s.Counter(l, "zstd_generic_error")
	l.dictionaryError = s.Counter(l, "zstd_dictionary_error")
	l.checksumError = s.Counter(l, "zstd_checksum_wrong_error")
	s.Counter(l, "zstd_memory_error")
	return l, nil
}

func (l *library) Encoding() string    { return "zstd" }
func (l *library) StatsPrefix() string { return "zstd." }

// reader is a synchronous zstd.Decoder, made at the first Reset.
type reader struct{ d *zstd.Decoder }

func (r *reader) Reset(src io.Reader) error {
	if r.d == nil {
		var err error
		r.d, err = zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27),
			zstd.WithDecoderLowmem(true))
		return err
	}
	return r.d.Reset(src)
}

func (r *reader) Read(p []byte) (int, error) { return r.d.Read(p) }

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
		Chunk: l.chunk, MaxRatio: 1000, Slack: 1 << 20,
		OnError: func(err error) {
			switch {
			case errors.Is(err, zstd.ErrCRCMismatch):
				l.checksumError.Inc()
			case errors.Is(err, zstd.ErrUnknownDictionary):
				l.dictionaryError.Inc()
			default:
				l.genericError.Inc()
			}
		},
		OnOverflow: func() { l.genericError.Inc() },
	})}
}

func (s *stream) Release() {
	s.Stream.Reset()
	s.lib.pool.Put(s)
}

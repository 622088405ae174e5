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
	"io"

	zstdv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/decompressor/v3"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/decompressor"
	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.zstd.decompressor"

func init() {
	decompressor.Libraries.Register(Name, []string{"envoy.extensions.compression.zstd.decompressor.v3.Zstd"}, create)
}

func create(a *anypb.Any, s decompressor.Scope) (decompressor.Library, error) {
	m := &zstdv3.Zstd{}
	if err := coding.Decode(a, m, "chunk_size"); err != nil {
		return nil, err
	}
	chunk, err := coding.ChunkSize(m.GetChunkSize())
	if err != nil {
		return nil, err
	}
	l := decompressor.NewPooled("zstd", "zstd.", func() decompressor.Decoder { return &reader{} })
	genericError := s.Counter(l, "zstd_generic_error")
	dictionaryError := s.Counter(l, "zstd_dictionary_error")
	checksumError := s.Counter(l, "zstd_checksum_wrong_error")
	s.Counter(l, "zstd_memory_error")
	l.Config = decompressor.StreamConfig{
		Chunk: chunk, MaxRatio: 1000, Slack: 1 << 20,
		OnError: func(err error) {
			switch {
			case errors.Is(err, zstd.ErrCRCMismatch):
				checksumError.Inc()
			case errors.Is(err, zstd.ErrUnknownDictionary):
				dictionaryError.Inc()
			default:
				genericError.Inc()
			}
		},
		OnOverflow: genericError.Inc,
	}
	return l, nil
}

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

// Package zstd is Envoy's zstd compressor library
// (envoy.compression.zstd.compressor) for the compressor filter, on
// github.com/klauspost/compress/zstd: compression_level (default 3) picks
// the closest encoder level, enable_checksum adds the frame checksum, each
// piece is flushed and the frame ended at the end of the body. strategy and
// dictionary are refused.
package zstd

import (
	"fmt"
	"io"

	zstdv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/compressor/v3"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/compressor"
	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.zstd.compressor"

func init() {
	compressor.Libraries.Register(Name, []string{"envoy.extensions.compression.zstd.compressor.v3.Zstd"}, create)
}

func create(a *anypb.Any) (compressor.Library, error) {
	m := &zstdv3.Zstd{}
	if err := coding.Decode(a, m, "compression_level", "enable_checksum", "chunk_size"); err != nil {
		return nil, err
	}
	level := 3 // ZSTD_CLEVEL_DEFAULT; 0 means the default too
	if v := m.GetCompressionLevel(); v != nil && v.GetValue() > 0 {
		level = int(v.GetValue())
	}
	opts := []zstd.EOption{
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderCRC(m.GetEnableChecksum()),
		zstd.WithEncoderConcurrency(1),
	}
	chunk, err := coding.ChunkSize(m.GetChunkSize())
	if err != nil {
		return nil, err
	}
	if _, err := zstd.NewWriter(nil, opts...); err != nil {
		return nil, fmt.Errorf("compression_level: %w", err)
	}
	return compressor.NewPooled("zstd", "zstd.", chunk, func(w io.Writer) *zstd.Encoder {
		e, _ := zstd.NewWriter(w, opts...) // the options were checked
		return e
	}), nil
}

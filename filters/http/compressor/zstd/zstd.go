// Package zstd is Envoy's zstd compressor library
// (envoy.compression.zstd.compressor) for the compressor filter, on
// github.com/klauspost/compress/zstd: compression_level (default 3) picks
// the closest encoder level, enable_checksum adds the frame checksum, each
// piece is flushed and the frame ended at the end of the body. strategy and
// dictionary are refused.
package zstd

import (
	"fmt"
	"sync"

	zstdv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/compressor/v3"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/compressor"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.zstd.compressor"

func init() {
	compressor.Libraries.Register(Name, []string{"envoy.extensions.compression.zstd.compressor.v3.Zstd"}, create)
}

// library is one compiled Zstd config; pool reuses stream encoders.
type library struct {
	opts  []zstd.EOption
	chunk int
	pool  sync.Pool
}

func create(a *anypb.Any) (compressor.Library, error) {
	m := &zstdv3.Zstd{}
	if a != nil {
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	if err := confcheck.Fields(m, "", "compression_level", "enable_checksum", "chunk_size"); err != nil {
		return nil, err
	}
	level := 3 // ZSTD_CLEVEL_DEFAULT; 0 means the default too
	if v := m.GetCompressionLevel(); v != nil && v.GetValue() > 0 {
		level = int(v.GetValue())
	}
	l := &library{chunk: 4096, opts: []zstd.EOption{
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderCRC(m.GetEnableChecksum()),
		zstd.WithEncoderConcurrency(1),
	}}
	if v := m.GetChunkSize(); v != nil {
		if v.GetValue() < 4096 || v.GetValue() > 65536 {
			return nil, fmt.Errorf("chunk_size: %d not in [4096, 65536]", v.GetValue())
		}
		l.chunk = int(v.GetValue())
	}
	if _, err := zstd.NewWriter(nil, l.opts...); err != nil {
		return nil, fmt.Errorf("compression_level: %w", err)
	}
	return l, nil
}

func (l *library) Encoding() string    { return "zstd" }
func (l *library) StatsPrefix() string { return "zstd." }

// stream is one body's zstd encoder and its output.
type stream struct {
	lib  *library
	sink compressor.Sink
	w    *zstd.Encoder
}

func (l *library) NewCompressor() compressor.Compressor {
	if s, ok := l.pool.Get().(*stream); ok {
		s.w.Reset(&s.sink)
		return s
	}
	s := &stream{lib: l}
	s.sink.Grow(l.chunk)
	s.w, _ = zstd.NewWriter(&s.sink, l.opts...) // the options were checked
	return s
}

// Compress writes p and flushes (ZSTD_e_flush), or ends the frame
// (ZSTD_e_end) at the end.
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

// Package gzip is Envoy's gzip decompressor library
// (envoy.compression.gzip.decompressor) for the decompressor filter, on Go's
// compress/gzip: one gzip member per body (input after it is ignored, as
// zlib's inflate after Z_STREAM_END), max_inflate_ratio against
// decompression bombs and chunk_size as the read size. window_bits is
// validated as Envoy does but Go's inflater accepts any window up to 32 KiB,
// so a body compressed with a larger window than configured is decoded where
// zlib would fail.
package gzip

import (
	"bufio"
	stdgzip "compress/gzip"
	"fmt"
	"io"
	"sync"

	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/decompressor/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/decompressor"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.gzip.decompressor"

func init() {
	decompressor.Libraries.Register(Name, []string{"envoy.extensions.compression.gzip.decompressor.v3.Gzip"}, create)
}

// library is one compiled Gzip config; pool reuses streams.
type library struct {
	chunk int
	ratio uint64
	pool  sync.Pool
	// Envoy's ZlibDecompressorImpl stats; only data errors can happen in Go.
	dataError *stats.Counter
}

func create(a *anypb.Any, s decompressor.Scope) (decompressor.Library, error) {
	m := &gzipv3.Gzip{}
	if a != nil {
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	if err := confcheck.Fields(m, "", "window_bits", "chunk_size", "max_inflate_ratio"); err != nil {
		return nil, err
	}
	if v := m.GetWindowBits(); v != nil && (v.GetValue() < 9 || v.GetValue() > 15) {
		return nil, fmt.Errorf("window_bits: %d not in [9, 15]", v.GetValue())
	}
	l := &library{chunk: 4096, ratio: 100}
	if v := m.GetChunkSize(); v != nil {
		if v.GetValue() < 4096 || v.GetValue() > 65536 {
			return nil, fmt.Errorf("chunk_size: %d not in [4096, 65536]", v.GetValue())
		}
		l.chunk = int(v.GetValue())
	}
	if v := m.GetMaxInflateRatio(); v != nil {
		if v.GetValue() < 1 || v.GetValue() > 1032 {
			return nil, fmt.Errorf("max_inflate_ratio: %d not in [1, 1032]", v.GetValue())
		}
		l.ratio = uint64(v.GetValue())
	}
	for _, n := range []string{"zlib_errno", "zlib_stream_error", "zlib_mem_error", "zlib_buf_error", "zlib_version_error"} {
		s.Counter(l, n) // present at zero, as Envoy's
	}
	l.dataError = s.Counter(l, "zlib_data_error")
	return l, nil
}

func (l *library) Encoding() string    { return "gzip" }
func (l *library) StatsPrefix() string { return "gzip." }

// reader is a gzip.Reader that reads one member; it is created at the
// first Reset because gzip.NewReader reads the header.
type reader struct {
	zr *stdgzip.Reader
}

func (r *reader) Reset(src io.Reader) error {
	// The source is a ByteReader so flate reads no further than it needs.
	br := bufio.NewReaderSize(src, 512)
	var err error
	if r.zr == nil {
		r.zr, err = stdgzip.NewReader(br)
	} else {
		err = r.zr.Reset(br)
	}
	if err == nil {
		r.zr.Multistream(false)
	}
	return err
}

func (r *reader) Read(p []byte) (int, error) { return r.zr.Read(p) }

// stream is one body's decoder.
type stream struct {
	lib *library
	*decompressor.Stream
}

func (l *library) NewDecompressor() decompressor.Decompressor {
	if s, ok := l.pool.Get().(*stream); ok {
		return s
	}
	count := func(error) { l.dataError.Inc() }
	return &stream{lib: l, Stream: decompressor.NewStream(&reader{}, decompressor.StreamConfig{
		Chunk: l.chunk, MaxRatio: l.ratio, Slack: 32 << 10, OnError: count, OnOverflow: func() { count(nil) }})}
}

func (s *stream) Release() {
	s.Stream.Reset()
	s.lib.pool.Put(s)
}

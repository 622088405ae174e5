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

	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/decompressor/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/decompressor"
	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
)

// Name is the library's Envoy name.
const Name = "envoy.compression.gzip.decompressor"

func init() {
	decompressor.Libraries.Register(Name, []string{"envoy.extensions.compression.gzip.decompressor.v3.Gzip"}, create)
}

func create(a *anypb.Any, s decompressor.Scope) (decompressor.Library, error) {
	m := &gzipv3.Gzip{}
	if err := coding.Decode(a, m, "window_bits", "chunk_size", "max_inflate_ratio"); err != nil {
		return nil, err
	}
	if v := m.GetWindowBits(); v != nil && (v.GetValue() < 9 || v.GetValue() > 15) {
		return nil, fmt.Errorf("window_bits: %d not in [9, 15]", v.GetValue())
	}
	chunk, err := coding.ChunkSize(m.GetChunkSize())
	if err != nil {
		return nil, err
	}
	ratio := uint64(100)
	if v := m.GetMaxInflateRatio(); v != nil {
		if v.GetValue() < 1 || v.GetValue() > 1032 {
			return nil, fmt.Errorf("max_inflate_ratio: %d not in [1, 1032]", v.GetValue())
		}
		ratio = uint64(v.GetValue())
	}
	l := decompressor.NewPooled("gzip", "gzip.", func() decompressor.Decoder { return &reader{} })
	for _, n := range []string{"zlib_errno", "zlib_stream_error", "zlib_mem_error", "zlib_buf_error", "zlib_version_error"} {
		s.Counter(l, n) // present at zero, as Envoy's
	}
	// Envoy's ZlibDecompressorImpl stats; only data errors can happen in Go.
	dataError := s.Counter(l, "zlib_data_error")
	l.Config = decompressor.StreamConfig{Chunk: chunk, MaxRatio: ratio, Slack: 32 << 10,
		OnError: func(error) { dataError.Inc() }, OnOverflow: dataError.Inc}
	return l, nil
}

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

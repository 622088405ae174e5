package compressor

import (
	"io"
	"sync"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/registry"
)

// Library is one configured compressor library (an
// envoy.compression.*.compressor extension), shared by every stream.
type Library interface {
	// Encoding is the content-encoding token it produces: "gzip", "br", "zstd".
	Encoding() string
	// StatsPrefix is the library's part of the filter's stat names, with its
	// trailing dot: "gzip.", "brotli.", "zstd.".
	StatsPrefix() string
	// NewCompressor returns the compressor of one stream's body.
	NewCompressor() Compressor
}

// Compressor compresses one body piece by piece.
type Compressor interface {
	// Compress compresses p and returns the output so far: a flushed block a
	// decoder can decode up to here, or with end the rest of the stream
	// (trailer included). The result is valid until the next call.
	Compress(p []byte, end bool) ([]byte, error)
	// Release gives the compressor's state back; it is not used afterwards.
	Release()
}

// LibraryFactory compiles a compressor_library typed_config; errors name the
// field.
type LibraryFactory func(cfg *anypb.Any) (Library, error)

// Libraries holds the compressor libraries by Envoy name and config type URL;
// each library's package registers itself from init().
var Libraries = registry.New[LibraryFactory]("compressor library")

// Sink is the io.Writer a library's stream writer writes into: Take hands
// out what was written since the last Take and starts over in the same
// memory.
type Sink struct{ b []byte }

// Write appends p.
func (s *Sink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

// Take returns the bytes written since the last Take; they are valid until
// the next Write.
func (s *Sink) Take() []byte {
	b := s.b
	s.b = s.b[:0]
	return b
}

// Grow makes room for n bytes (the library's chunk_size) up front.
func (s *Sink) Grow(n int) {
	if cap(s.b) < n {
		s.b = make([]byte, 0, n)
	}
}

// Writer is a library's stream writer: Flush ends a block a decoder can
// decode up to there, Close ends the stream, Reset starts a new stream into
// the given writer.
type Writer interface {
	io.Writer
	Flush() error
	Close() error
	Reset(w io.Writer)
}

// Pooled is a Library whose compressors are writers of type W, each writing
// into its own Sink; Release puts a compressor back in the pool, and the
// next NewCompressor resets it.
type Pooled[W Writer] struct {
	encoding, statsPrefix string
	chunk                 int
	newWriter             func(io.Writer) W
	pool                  sync.Pool
}

// NewPooled is the library of encoding and statsPrefix (see Library) whose
// writers newWriter makes, with output buffers of chunk bytes up front.
func NewPooled[W Writer](encoding, statsPrefix string, chunk int, newWriter func(io.Writer) W) *Pooled[W] {
	return &Pooled[W]{encoding: encoding, statsPrefix: statsPrefix, chunk: chunk, newWriter: newWriter}
}

// Encoding is the content-encoding token.
func (l *Pooled[W]) Encoding() string { return l.encoding }

// StatsPrefix is the library's part of the stat names.
func (l *Pooled[W]) StatsPrefix() string { return l.statsPrefix }

// NewCompressor takes a pooled stream, or makes one.
func (l *Pooled[W]) NewCompressor() Compressor {
	if s, ok := l.pool.Get().(*pooledStream[W]); ok {
		s.w.Reset(&s.sink)
		return s
	}
	s := &pooledStream[W]{lib: l}
	s.sink.Grow(l.chunk)
	s.w = l.newWriter(&s.sink)
	return s
}

// pooledStream is one body's writer and its output.
type pooledStream[W Writer] struct {
	lib  *Pooled[W]
	sink Sink
	w    W
}

// Compress writes p and flushes (zlib's Z_SYNC_FLUSH, brotli's
// BROTLI_OPERATION_FLUSH, zstd's ZSTD_e_flush), or closes the stream
// (Z_FINISH, BROTLI_OPERATION_FINISH, ZSTD_e_end) at the end.
func (s *pooledStream[W]) Compress(p []byte, end bool) ([]byte, error) {
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

func (s *pooledStream[W]) Release() {
	s.sink.Take()
	s.lib.pool.Put(s)
}

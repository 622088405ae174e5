package compressor

import (
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

package decompressor

import (
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/registry"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Library is one configured decompressor library (an
// envoy.compression.*.decompressor extension), shared by every stream.
type Library interface {
	// Encoding is the content-encoding token it undoes: "gzip", "br", "zstd".
	Encoding() string
	// StatsPrefix is the library's part of the filter's stat names, with its
	// trailing dot: "gzip.", "brotli.", "zstd.".
	StatsPrefix() string
	// NewDecompressor returns the decompressor of one stream's body.
	NewDecompressor() Decompressor
}

// Decompressor decompresses one body piece by piece.
type Decompressor interface {
	// Decompress decompresses p and returns the output so far; with end the
	// body is over and everything still held is returned. Errors (corrupt
	// input, a decompression bomb) are counted in the library's stats and
	// end the output: nothing more comes out of later pieces, as Envoy's
	// decompressors pass on what they decoded and drop the rest. The result
	// is valid until the next call.
	Decompress(p []byte, end bool) []byte
	// Release gives the decompressor's state back; it is not used
	// afterwards.
	Release()
}

// Scope is where a library's own stats go: Prefix is the filter's
// "<stat_prefix>decompressor.<library name>." and the library adds
// "<StatsPrefix>decompressor_library." before each name, as Envoy.
type Scope struct {
	Store  *stats.Store
	Prefix string
}

// Counter is the library stat name in s.
func (s Scope) Counter(lib Library, name string) *stats.Counter {
	return s.Store.Counter(s.Prefix + lib.StatsPrefix() + "decompressor_library." + name)
}

// LibraryFactory compiles a decompressor_library typed_config; errors name
// the field.
type LibraryFactory func(cfg *anypb.Any, s Scope) (Library, error)

// Libraries holds the decompressor libraries by Envoy name and config type
// URL; each library's package registers itself from init().
var Libraries = registry.New[LibraryFactory]("decompressor library")

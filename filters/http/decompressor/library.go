package decompressor

import (
	"sync"

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

// Pooled is a Library whose decompressors are Streams over decoders that
// newDecoder makes, driven by Config; Release puts one back in the pool.
type Pooled struct {
	// Config drives every Stream; set it before the first NewDecompressor
	// (after the library's counters, which need the library, are made).
	Config StreamConfig

	encoding, statsPrefix string
	newDecoder            func() Decoder
	pool                  sync.Pool
}

// NewPooled is the library of encoding and statsPrefix (see Library) whose
// decoders newDecoder makes.
func NewPooled(encoding, statsPrefix string, newDecoder func() Decoder) *Pooled {
	return &Pooled{encoding: encoding, statsPrefix: statsPrefix, newDecoder: newDecoder}
}

// Encoding is the content-encoding token.
func (l *Pooled) Encoding() string { return l.encoding }

// StatsPrefix is the library's part of the stat names.
func (l *Pooled) StatsPrefix() string { return l.statsPrefix }

// NewDecompressor takes a pooled stream, or makes one.
func (l *Pooled) NewDecompressor() Decompressor {
	if s, ok := l.pool.Get().(*pooledStream); ok {
		return s
	}
	return &pooledStream{lib: l, Stream: NewStream(l.newDecoder(), l.Config)}
}

// pooledStream is one body's decoder.
type pooledStream struct {
	lib *Pooled
	*Stream
}

func (s *pooledStream) Release() {
	s.Stream.Reset()
	s.lib.pool.Put(s)
}

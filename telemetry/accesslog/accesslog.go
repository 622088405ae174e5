// Package accesslog compiles Envoy's access_log lists (envoy.config.accesslog.v3.AccessLog)
// into an immutable Set whose Log evaluates each logger's filter and writes the formatted line.
// Writes go to buffered, shared, reference-counted files flushed by a background goroutine,
// so Log never waits on disk I/O and does not allocate for text formats once warm.
package accesslog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/registry"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// DefaultFlushInterval is how often buffered log files are written out when
// Options.FlushInterval is zero.
const DefaultFlushInterval = time.Second

// DefaultFlushSize is the buffered size that triggers a flush before the
// interval elapses (Envoy's 64 KiB minimum flush size).
const DefaultFlushSize = 64 << 10

// Options is what the loggers of one access_log list share.
type Options struct {
	// Stats receives the filesystem.* counters of the files opened; nil uses a
	// private store (the counters are then invisible).
	Stats *stats.Store
	// Log receives write errors; nil uses slog.Default().
	Log *slog.Logger
	// FlushInterval between background flushes; zero is DefaultFlushInterval.
	// It applies to a file when first opened; later openers share it.
	FlushInterval time.Duration
	// Clusters reaches the cluster a gRPC access logger names; nil refuses such loggers.
	Clusters *upstream.Manager
}

// Logger writes one access-log entry. It must not block on I/O and must be
// safe for concurrent use.
type Logger interface {
	Log(ctx *formatter.Context)
}

// Factory builds a Logger from its typed config (nil when the access log only
// names the logger). Files it opens through b are released by Set.Close; a
// Logger that is also an io.Closer is closed there too.
type Factory func(cfg *anypb.Any, b *Builder) (Logger, error)

// Registry holds the access loggers by Envoy name and config type URL.
var Registry = registry.New[Factory]("access logger")

// Register adds an access logger; it panics on a duplicate name or type.
func Register(name string, typeURLs []string, f Factory) { Registry.Register(name, typeURLs, f) }

// Builder gives factories what they share with the Set being compiled.
type Builder struct {
	opts  Options
	files []*file
}

// Options are the options Compile was called with.
func (b *Builder) Options() Options { return b.opts }

// OpenFile opens (or shares) the log file at path, creating it in append mode.
// The Set being compiled holds a reference until Close.
func (b *Builder) OpenFile(path string) (Writer, error) {
	f, err := files.open(path, b.opts)
	if err != nil {
		return nil, err
	}
	b.files = append(b.files, f)
	return f, nil
}

// Writer is a buffered log destination. Write copies p and never blocks on
// disk I/O.
type Writer interface {
	Write(p []byte)
}

// entry is one compiled access log.
type entry struct {
	filter filter // nil: log everything
	logger Logger
}

// Set is the compiled access_log list of one listener, connection manager,
// tcp_proxy or router. It is immutable and safe for concurrent use; a nil
// *Set logs nothing.
type Set struct {
	entries []entry
	files   []*file
	closers []io.Closer

	closeOnce sync.Once
	closeErr  error
}

// Compile builds the loggers of one access_log list. Errors name the index
// and field, e.g. "access_log[0].typed_config: ...". An empty list yields a
// nil Set.
func Compile(logs []*accesslogv3.AccessLog, opts Options) (*Set, error) {
	if len(logs) == 0 {
		return nil, nil
	}
	if opts.Stats == nil {
		opts.Stats = stats.NewStore()
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	b := &Builder{opts: opts}
	s := &Set{}
	for i, al := range logs {
		e, err := compileEntry(al, b)
		if err != nil {
			s.files = b.files
			_ = s.Close()
			return nil, fmt.Errorf("access_log[%d].%w", i, err)
		}
		s.entries = append(s.entries, e)
		if c, ok := e.logger.(io.Closer); ok {
			s.closers = append(s.closers, c)
		}
	}
	s.files = b.files
	return s, nil
}

func compileEntry(al *accesslogv3.AccessLog, b *Builder) (entry, error) {
	var e entry
	if al.GetFilter() != nil {
		f, err := compileFilter(al.GetFilter())
		if err != nil {
			return e, fmt.Errorf("filter.%w", err)
		}
		e.filter = f
	}
	tc := al.GetTypedConfig()
	fac, err := Registry.Lookup(al.GetName(), tc.GetTypeUrl())
	if err != nil {
		if tc != nil {
			return e, fmt.Errorf("typed_config: %w", err)
		}
		return e, fmt.Errorf("name: %w", err)
	}
	l, err := fac(tc, b)
	if err != nil {
		return e, fmt.Errorf("typed_config: %w", err)
	}
	e.logger = l
	return e, nil
}

// emptyContext stands in for a nil Context; it is never written.
var emptyContext formatter.Context

// Log evaluates every logger's filter for ctx and writes the entries that
// pass. ctx is read only during the call; nil logs an entry with every value
// missing.
func (s *Set) Log(ctx *formatter.Context) {
	if s == nil {
		return
	}
	if ctx == nil {
		ctx = &emptyContext
	}
	for i := range s.entries {
		e := &s.entries[i]
		if e.filter == nil || e.filter.evaluate(ctx) {
			e.logger.Log(ctx)
		}
	}
}

// Len is the number of loggers (0 for nil).
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// Close releases the Set's files, flushing what they buffered; a file is
// closed when no Set uses it any more. Logging after Close is a no-op for
// the released files. Close is idempotent.
func (s *Set) Close() error {
	if s == nil {
		return nil
	}
	s.closeOnce.Do(func() {
		var errs []error
		for _, c := range s.closers {
			errs = append(errs, c.Close())
		}
		for _, f := range s.files {
			errs = append(errs, files.release(f))
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

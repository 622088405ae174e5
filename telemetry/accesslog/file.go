package accesslog

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Paths that name the process's standard streams instead of files, as
// Envoy's stdout/stderr loggers use.
const (
	stdoutPath = "/dev/stdout"
	stderrPath = "/dev/stderr"
)

// fileStats are Envoy's filesystem.* access-log file statistics, shared by
// every file of a store.
type fileStats struct {
	writeBuffered      *stats.Counter
	writeCompleted     *stats.Counter
	writeFailed        *stats.Counter
	flushedByTimer     *stats.Counter
	reopenFailed       *stats.Counter
	writeTotalBuffered *stats.Gauge
}

func newFileStats(s *stats.Store) *fileStats {
	sc := s.Scope("filesystem")
	return &fileStats{
		writeBuffered:      sc.Counter("write_buffered"),
		writeCompleted:     sc.Counter("write_completed"),
		writeFailed:        sc.Counter("write_failed"),
		flushedByTimer:     sc.Counter("flushed_by_timer"),
		reopenFailed:       sc.Counter("reopen_failed"),
		writeTotalBuffered: sc.Gauge("write_total_buffered"),
	}
}

// file is one shared, buffered log destination. Writers append to buf under
// mu; the flusher goroutine swaps buf out and writes it with only ioMu held,
// so writers never wait for the disk.
type file struct {
	path  string
	refs  int // guarded by manager.mu
	stats *fileStats
	log   *slog.Logger

	mu     sync.Mutex
	buf    []byte
	closed bool

	ioMu   sync.Mutex // serializes writes to out and reopening
	out    io.Writer
	osFile *os.File // nil for stdout/stderr, which are never closed
	spare  []byte   // guarded by ioMu

	kick     chan struct{} // a large buffer or Reopen asks for a flush
	reopen   chan struct{}
	done     chan struct{}
	finished chan struct{}
}

// manager shares files by path between Sets.
type manager struct {
	mu     sync.Mutex
	byPath map[string]*file
}

var files = &manager{byPath: map[string]*file{}}

func (m *manager) open(path string, opts Options) (*file, error) {
	if path == "" {
		return nil, fmt.Errorf("path: required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.byPath[path]; ok {
		f.refs++
		return f, nil
	}
	f := &file{
		path:     path,
		refs:     1,
		stats:    newFileStats(opts.Stats),
		log:      opts.Log,
		kick:     make(chan struct{}, 1),
		reopen:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
	}
	switch path {
	case stdoutPath:
		f.out = os.Stdout
	case stderrPath:
		f.out = os.Stderr
	default:
		of, err := openAppend(path)
		if err != nil {
			return nil, err
		}
		f.out, f.osFile = of, of
	}
	m.byPath[path] = f
	go f.flusher(opts.FlushInterval)
	return f, nil
}

func openAppend(path string) (*os.File, error) {
	of, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to open access log file %q: %w", path, err)
	}
	return of, nil
}

// release drops one reference; the last one flushes and closes the file.
func (m *manager) release(f *file) error {
	m.mu.Lock()
	f.refs--
	last := f.refs == 0
	if last {
		delete(m.byPath, f.path)
	}
	m.mu.Unlock()
	if !last {
		return nil
	}
	close(f.done)
	<-f.finished
	if f.osFile != nil {
		return f.osFile.Close()
	}
	return nil
}

// Reopen asks every open log file to be closed and reopened at its path
// before its next write, for log rotation (Envoy does this on SIGUSR1 and
// /reopen_logs).
func Reopen() {
	files.mu.Lock()
	defer files.mu.Unlock()
	for _, f := range files.byPath {
		select {
		case f.reopen <- struct{}{}:
		default:
		}
	}
}

// Write buffers a copy of p. It never blocks on I/O.
func (f *file) Write(p []byte) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.buf = append(f.buf, p...)
	big := len(f.buf) >= DefaultFlushSize
	f.mu.Unlock()
	f.stats.writeBuffered.Inc()
	f.stats.writeTotalBuffered.Add(int64(len(p)))
	if big {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

// flusher writes the buffer out every interval, when it grows large, on
// Reopen, and a last time when the file is released.
func (f *file) flusher(interval time.Duration) {
	defer close(f.finished)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if f.flush() {
				f.stats.flushedByTimer.Inc()
			}
		case <-f.kick:
			f.flush()
		case <-f.reopen:
			f.flush()
			f.doReopen()
		case <-f.done:
			f.mu.Lock()
			f.closed = true
			f.mu.Unlock()
			f.flush()
			return
		}
	}
}

// flush writes what is buffered; it reports whether there was anything.
func (f *file) flush() bool {
	f.ioMu.Lock()
	defer f.ioMu.Unlock()
	f.mu.Lock()
	data := f.buf
	f.buf = f.spare[:0]
	f.mu.Unlock()
	if len(data) == 0 {
		f.spare = data
		return false
	}
	f.stats.writeTotalBuffered.Add(-int64(len(data)))
	if _, err := f.out.Write(data); err != nil {
		f.stats.writeFailed.Inc()
		f.log.Error("access log write failed", "path", f.path, "error", err)
	} else {
		f.stats.writeCompleted.Inc()
	}
	if cap(data) > 4*DefaultFlushSize {
		data = nil // do not keep a burst's buffer forever
	}
	f.spare = data[:0]
	return true
}

func (f *file) doReopen() {
	if f.osFile == nil {
		return
	}
	f.ioMu.Lock()
	defer f.ioMu.Unlock()
	of, err := openAppend(f.path)
	if err != nil {
		f.stats.reopenFailed.Inc()
		f.log.Error("access log reopen failed", "path", f.path, "error", err)
		return
	}
	_ = f.osFile.Close()
	f.out, f.osFile = of, of
}

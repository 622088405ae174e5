// Package filesource is file-based xDS (path_config_source and the
// deprecated path): it reads a DiscoveryResponse from a file as Envoy does
// (YAML, JSON or proto by suffix) and hands its resources to the same
// watchers a gRPC client feeds, re-reading the file when a new one is moved
// into place. A file that cannot be read or parsed counts update_failure, one
// whose resources a watcher rejects counts update_rejected; either way the
// last good version stays in force.
package filesource

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
	"github.com/outrider-proxy/outrider/xds/client"
)

// Config configures a Source.
type Config struct {
	// Path is the file holding a DiscoveryResponse. Required.
	Path string
	// WatchedDirectory, when set, is watched instead of Path's own entry: a
	// file moved into it makes Path be re-read (Envoy's watched_directory).
	WatchedDirectory string
	// Interval is how often the file is checked for a change; zero means
	// 100 ms.
	Interval time.Duration
	// Stats receives the per-type subscription stats named by TypeStats;
	// nil means a private store.
	Stats *stats.Store
	// TypeStats maps a type URL to its stats prefix (e.g.
	// "listener_manager.lds"), as client.Config.TypeStats; types not in the
	// map have no stats.
	TypeStats map[string]string
	// Log receives rejections; nil discards them.
	Log *slog.Logger
}

// Source is one watched file. Create it with New; it implements the
// Watch/SetNames/Close surface of client.Client.
type Source struct {
	cfg  Config
	stop chan struct{}
	wg   sync.WaitGroup

	applyMu sync.Mutex // serializes reading and applying; watchers run under it

	mu       sync.Mutex // guards the fields below and each watch's names and watchers
	watches  map[string]*watch
	started  bool
	closed   bool
	reapply  bool
	lastKey  fileKey
	lastData *discoveryv3.DiscoveryResponse // last file that parsed
}

type watch struct {
	t     client.ResourceType
	names []string // nil: every resource of the type
	ws    []*entry
	held  map[string]bool // names last delivered, to tell removals
	stats *typeStats
}

// entry wraps a watcher so that it can be found again (a WatcherFunc is
// not comparable).
type entry struct{ w client.Watcher }

type typeStats struct {
	attempt, success, rejected, failure *stats.Counter
	updateTime, version                 *stats.Gauge
}

// New returns a source; the file is first read when a type is watched.
func New(cfg Config) *Source {
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.Stats == nil {
		cfg.Stats = stats.NewStore()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Source{cfg: cfg, stop: make(chan struct{}), watches: map[string]*watch{}}
}

// Check reports an error when the file does not exist, as Envoy refuses a
// filesystem subscription whose path is missing at start-up.
func Check(path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("paths must refer to an existing path in the system: %w", err)
	}
	return nil
}

// Watch subscribes w to type t (names, or every resource of the type when
// names is nil). The first Watch starts polling; a watcher joining a type
// already read is given the current resources. cancel removes w.
func (s *Source) Watch(t client.ResourceType, names []string, w client.Watcher) (cancel func()) {
	s.mu.Lock()
	wt := s.watches[t.TypeURL()]
	if wt == nil {
		wt = &watch{t: t, names: names, held: map[string]bool{}}
		if p, ok := s.cfg.TypeStats[t.TypeURL()]; ok {
			sc := s.cfg.Stats.Scope(p)
			wt.stats = &typeStats{attempt: sc.Counter("update_attempt"), success: sc.Counter("update_success"),
				rejected: sc.Counter("update_rejected"), failure: sc.Counter("update_failure"),
				updateTime: sc.Gauge("update_time"), version: sc.Gauge("version")}
		}
		s.watches[t.TypeURL()] = wt
	}
	e := &entry{w}
	wt.ws = append(wt.ws, e)
	start := !s.started && !s.closed
	s.started = true
	s.mu.Unlock()
	if start {
		s.wg.Add(1)
		go s.run()
	} else {
		s.enqueueReapply()
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		wt.ws = slices.DeleteFunc(wt.ws, func(x *entry) bool { return x == e })
	}
}

// SetNames replaces the names of type t's subscription (nil: every
// resource); the held file is applied again for the new names.
func (s *Source) SetNames(t client.ResourceType, names []string) {
	s.mu.Lock()
	if wt := s.watches[t.TypeURL()]; wt != nil {
		wt.names = names
	}
	s.mu.Unlock()
	s.enqueueReapply()
}

// enqueueReapply makes the poller apply the held file again, so watchers
// are never called synchronously from Watch or SetNames.
func (s *Source) enqueueReapply() {
	s.mu.Lock()
	s.reapply = true
	s.mu.Unlock()
}

// Close stops polling and waits for the poller; watchers are not called
// after it returns. It must not be called from a watcher.
func (s *Source) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
}

// fileKey identifies one version of the file on disk: a file moved into
// place has a new inode and change time.
type fileKey struct {
	ino, size          uint64
	mtime, ctime, dirM int64
	ok                 bool
}

func (s *Source) key() fileKey {
	fi, err := os.Stat(s.cfg.Path)
	if err != nil {
		return fileKey{}
	}
	k := fileKey{size: uint64(fi.Size()), mtime: fi.ModTime().UnixNano(), ok: true}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.ino = st.Ino
		k.ctime = st.Ctim.Nano()
	}
	if d := s.cfg.WatchedDirectory; d != "" {
		if di, err := os.Stat(d); err == nil {
			k.dirM = di.ModTime().UnixNano()
		}
	}
	return k
}

func (s *Source) run() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		s.poll()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// poll re-reads the file when it changed and applies it; after a Watch or
// SetNames it applies the held file again.
func (s *Source) poll() {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	k := s.key()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	changed := k != s.lastKey
	reapply := s.reapply
	s.reapply = false
	s.lastKey = k
	held := s.lastData
	watches := make([]*watch, 0, len(s.watches))
	for _, url := range sortedKeys(s.watches) {
		watches = append(watches, s.watches[url])
	}
	s.mu.Unlock()
	if !changed {
		if reapply && held != nil {
			for _, wt := range watches {
				_ = s.apply(wt, held) // already counted when first read
			}
		}
		return
	}
	for _, wt := range watches {
		if wt.stats != nil {
			wt.stats.attempt.Inc()
		}
	}
	dr := &discoveryv3.DiscoveryResponse{}
	data, err := os.ReadFile(s.cfg.Path)
	if err == nil {
		err = bootstrap.LoadMessage(s.cfg.Path, data, dr)
	}
	if err != nil {
		s.cfg.Log.Warn("filesystem config update failure", "path", s.cfg.Path, "err", err)
		for _, wt := range watches {
			if wt.stats != nil {
				wt.stats.failure.Inc()
			}
		}
		return
	}
	s.mu.Lock()
	s.lastData = dr
	s.mu.Unlock()
	for _, wt := range watches {
		url := wt.t.TypeURL()
		if err := s.apply(wt, dr); err != nil {
			s.cfg.Log.Warn("filesystem config update rejected", "path", s.cfg.Path, "type", url, "version", dr.GetVersionInfo(), "err", err)
			if wt.stats != nil {
				wt.stats.rejected.Inc()
			}
			continue
		}
		if wt.stats != nil {
			wt.stats.success.Inc()
			wt.stats.updateTime.Set(time.Now().UnixMilli())
			wt.stats.version.Set(int64(hash64(dr.GetVersionInfo())))
		}
	}
}

// apply decodes the file's resources of wt's type and tells its watchers.
// Resources of another type, duplicates and invalid ones reject the update,
// as a NACK would.
func (s *Source) apply(wt *watch, dr *discoveryv3.DiscoveryResponse) error {
	s.mu.Lock()
	names, ws := wt.names, slices.Clone(wt.ws)
	s.mu.Unlock()
	u := client.Update{Resources: map[string]client.Resource{}, Version: dr.GetVersionInfo()}
	var errs []error
	for i, r := range dr.GetResources() {
		if r.GetTypeUrl() != wt.t.TypeURL() {
			errs = append(errs, fmt.Errorf("resources[%d]: type URL %q does not match %q", i, r.GetTypeUrl(), wt.t.TypeURL()))
			continue
		}
		name, m, err := wt.t.Decode(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("resources[%d] (%s): %w", i, name, err))
			continue
		}
		if _, dup := u.Resources[name]; dup {
			errs = append(errs, fmt.Errorf("resources[%d]: duplicate resource name %q", i, name))
			continue
		}
		if names != nil && !slices.Contains(names, name) {
			continue
		}
		u.Resources[name] = client.Resource{Msg: m}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	for name := range wt.held {
		if _, ok := u.Resources[name]; !ok && wt.t.AllResourcesRequired() {
			u.Removed = append(u.Removed, name)
		}
	}
	slices.Sort(u.Removed)
	var first error
	for _, e := range ws {
		if err := e.w.OnUpdate(wt.t.TypeURL(), u); err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first // as a NACK: the held state stays the last accepted one
	}
	wt.held = map[string]bool{}
	for name := range u.Resources {
		wt.held[name] = true
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// hash64 is FNV-1a, standing in for Envoy's xxHash64 of the version text.
func hash64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

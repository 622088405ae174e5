package filesource

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/xds/client"
)

type recorder struct {
	mu      sync.Mutex
	updates []client.Update
	reject  string // a resource name to reject
}

func (r *recorder) OnUpdate(_ string, u client.Update) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := u.Resources[r.reject]; ok && r.reject != "" {
		return os.ErrInvalid
	}
	r.updates = append(r.updates, u)
	return nil
}

// last waits up to 5 s for the n-th accepted update and describes it.
func (r *recorder) last(t *testing.T, n int) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		if len(r.updates) >= n {
			u := r.updates[n-1]
			r.mu.Unlock()
			var names []string
			for k := range u.Resources {
				names = append(names, k)
			}
			sort.Strings(names)
			return u.Version + " " + strings.Join(names, ",") + " -" + strings.Join(u.Removed, ",")
		}
		r.mu.Unlock()
	}
	t.Fatalf("no update %d", n)
	return ""
}

func cds(version string, names ...string) string {
	s := "version_info: \"" + version + "\"\nresources:\n"
	for _, n := range names {
		s += "- {'@type': type.googleapis.com/envoy.config.cluster.v3.Cluster, name: " + n + ", type: STATIC, connect_timeout: 1s}\n"
	}
	return s
}

// mv writes content next to path and renames it into place, as the
// dynamic-config-fs example tells users to.
func mv(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// A CDS file is applied, re-read when a new file is moved into place
// (omitted clusters removed), and a file that does not parse or that the
// watcher rejects leaves the last good version, counted as Envoy counts it.
func TestFileSource(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cds.yaml")
	mv(t, path, cds("1", "a", "b"))
	st := stats.NewStore()
	s := New(Config{Path: path, Interval: 10 * time.Millisecond, Stats: st, TypeStats: map[string]string{client.ClusterURL: "cluster_manager.cds"}})
	defer s.Close()
	r := &recorder{reject: "bad"}
	s.Watch(client.ClusterType, nil, r)
	if got := r.last(t, 1); got != "1 a,b -" {
		t.Fatalf("first read: %q", got)
	}
	mv(t, path, cds("2", "a"))
	if got := r.last(t, 2); got != "2 a -b" {
		t.Fatalf("after mv: %q", got)
	}
	counter := func(name string) uint64 { return st.Counter("cluster_manager.cds." + name).Value() }
	waitCount := func(name string, want uint64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); counter(name) < want && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		}
		if counter(name) != want {
			t.Fatalf("%s = %d, want %d", name, counter(name), want)
		}
	}
	mv(t, path, "resources: [\n")
	waitCount("update_failure", 1)
	mv(t, path, cds("3", "a", "bad"))
	waitCount("update_rejected", 1)
	mv(t, path, cds("4", "a", "c"))
	if got := r.last(t, 3); got != "4 a,c -" {
		t.Fatalf("after recovering: %q", got)
	}
	waitCount("update_success", 3)
	if counter("update_attempt") != 5 {
		t.Errorf("update_attempt = %d, want 5", counter("update_attempt"))
	}
}

// Named subscriptions (RDS, EDS) only get their names; a resource of the
// wrong type rejects the file.
func TestFileSourceNamesAndTypes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "eds.json")
	mv(t, path, `{"version_info":"1","resources":[{"@type":"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment","cluster_name":"x"},{"@type":"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment","cluster_name":"y"}]}`)
	s := New(Config{Path: path, Interval: 10 * time.Millisecond})
	defer s.Close()
	r := &recorder{}
	s.Watch(client.EndpointType, []string{"y"}, r)
	if got := r.last(t, 1); got != "1 y -" {
		t.Fatalf("named: %q", got)
	}
	s.SetNames(client.EndpointType, []string{"x", "y"})
	if got := r.last(t, 2); got != "1 x,y -" {
		t.Fatalf("after SetNames: %q", got)
	}
	r2 := &recorder{}
	s2 := New(Config{Path: path, Interval: 10 * time.Millisecond})
	defer s2.Close()
	s2.Watch(client.ClusterType, nil, r2)
	time.Sleep(100 * time.Millisecond)
	r2.mu.Lock()
	defer r2.mu.Unlock()
	if len(r2.updates) != 0 {
		t.Fatalf("a file of endpoints was applied as clusters: %v", r2.updates)
	}
	if err := Check(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Check: %v", err)
	}
}

package admin

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// isPprof reports whether b is a gzipped, non-empty profile as pprof writes.
func isPprof(b []byte) bool {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return false
	}
	raw, err := io.ReadAll(zr)
	return err == nil && len(raw) > 0
}

func TestProfilingEndpoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envoy.prof")
	s := New(nil)
	s.HandleProfiling(path)
	h := s.Handler()

	steps := []struct {
		method, target string
		code           int
		body           string
	}{
		{"GET", "/cpuprofiler?enable=y", http.StatusMethodNotAllowed, "Method GET not allowed, POST required."},
		{"POST", "/cpuprofiler", http.StatusBadRequest, "?enable=<y|n>\n"},
		{"POST", "/cpuprofiler?enable=x", http.StatusBadRequest, "?enable=<y|n>\n"},
		{"POST", "/cpuprofiler?enable=y&x=1", http.StatusBadRequest, "?enable=<y|n>\n"},
		{"POST", "/cpuprofiler?enable=n", http.StatusOK, "OK\n"}, // not running: still OK, as Envoy
		{"POST", "/cpuprofiler?enable=y", http.StatusOK, "OK\n"},
		{"POST", "/cpuprofiler?enable=y", http.StatusOK, "OK\n"}, // already running
		{"POST", "/cpuprofiler?enable=n", http.StatusOK, "OK\n"},
		{"POST", "/heapprofiler?enable=n", http.StatusBadRequest, "Fail to stop heap profiler: not started"},
		{"POST", "/heapprofiler?enable=y", http.StatusOK, "Starting heap profiler"},
		{"POST", "/heapprofiler?enable=y", http.StatusBadRequest, "Fail to start heap profiler: already started"},
		{"POST", "/heapprofiler?enable=n", http.StatusOK, "Heap profiler stopped and data written to " + path + ".heap. Read it with go tool pprof."},
	}
	for _, st := range steps {
		rec := do(t, h, st.method, st.target)
		if rec.Code != st.code || rec.Body.String() != st.body {
			t.Fatalf("%s %s: %d %q, want %d %q", st.method, st.target, rec.Code, rec.Body.String(), st.code, st.body)
		}
	}
	for _, f := range []string{path, path + ".heap"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !isPprof(b) {
			t.Errorf("%s: not a pprof profile (%d bytes)", f, len(b))
		}
	}
	rec := do(t, h, "GET", "/heap_dump")
	if rec.Code != http.StatusOK || !isPprof(rec.Body.Bytes()) {
		t.Errorf("/heap_dump: %d, %d bytes, want 200 and a pprof profile", rec.Code, rec.Body.Len())
	}

	// A profile path that cannot be created fails the start, as Envoy's 500.
	bad := New(nil)
	bad.HandleProfiling(filepath.Join(t.TempDir(), "missing", "dir", "envoy.prof"))
	if rec := do(t, bad.Handler(), "POST", "/cpuprofiler?enable=y"); rec.Code != http.StatusInternalServerError {
		t.Errorf("unwritable path: %d %q, want 500", rec.Code, rec.Body.String())
	}
}

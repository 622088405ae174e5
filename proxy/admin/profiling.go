package admin

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
)

// DefaultProfilePath is Envoy's admin.profile_path default.
const DefaultProfilePath = "/var/log/envoy/envoy.prof"

// profiler is the state of Envoy's profiling endpoints: at most one CPU
// profile and one heap profile in progress, both written to path (the heap
// profile to path + ".heap", so the two do not overwrite each other).
type profiler struct {
	path string

	mu      sync.Mutex
	cpuFile *os.File // nil: the CPU profiler is off
	heapOn  bool
}

// HandleProfiling registers Envoy's /cpuprofiler and /heapprofiler (POST
// ?enable=y|n) and /heap_dump with Go's profilers: the CPU profile is
// written to path (admin.profile_path; empty means DefaultProfilePath) from
// enable=y until enable=n; the heap profile (in-use and allocated space since
// the start) is written to path + ".heap" at enable=n; /heap_dump answers
// with the current heap profile. All are pprof files for `go tool pprof`.
func (s *Server) HandleProfiling(path string) {
	if path == "" {
		path = DefaultProfilePath
	}
	p := &profiler{path: path}
	s.Handle("/cpuprofiler", "enable/disable the CPU profiler", true, p.cpu)
	s.Handle("/heapprofiler", "enable/disable the heap profiler", true, p.heap)
	s.Handle("/heap_dump", "dump current heap profile", false, p.heapDump)
}

// enableParam returns ?enable's value when it is the only parameter and is
// y or n, as Envoy requires; otherwise it answers 400 and ok is false.
func enableParam(w http.ResponseWriter, r *http.Request) (enable, ok bool) {
	q := r.URL.Query()
	v, has := q["enable"]
	if len(q) != 1 || !has || len(v) != 1 || (v[0] != "y" && v[0] != "n") {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, "?enable=<y|n>\n")
		return false, false
	}
	return v[0] == "y", true
}

func (p *profiler) cpu(w http.ResponseWriter, r *http.Request) {
	enable, ok := enableParam(w, r)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case enable && p.cpuFile == nil:
		f, err := os.Create(p.path)
		if err == nil {
			if err = pprof.StartCPUProfile(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, "failure to start the profiler")
			return
		}
		p.cpuFile = f
	case !enable && p.cpuFile != nil:
		pprof.StopCPUProfile()
		p.cpuFile.Close()
		p.cpuFile = nil
	}
	fmt.Fprint(w, "OK\n")
}

func (p *profiler) heap(w http.ResponseWriter, r *http.Request) {
	enable, ok := enableParam(w, r)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	path := p.path + ".heap"
	switch {
	case enable && p.heapOn:
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, "Fail to start heap profiler: already started")
	case enable:
		p.heapOn = true
		fmt.Fprint(w, "Starting heap profiler")
	case !p.heapOn:
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, "Fail to stop heap profiler: not started")
	default:
		p.heapOn = false
		if err := writeHeap(path); err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "Fail to write the heap profile: %v", err)
			return
		}
		fmt.Fprintf(w, "Heap profiler stopped and data written to %s. Read it with go tool pprof.", path)
	}
}

// writeHeap writes the heap profile, as of the last GC, to path.
func writeHeap(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (p *profiler) heapDump(w http.ResponseWriter, _ *http.Request) {
	var b bytes.Buffer
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(&b, 0); err != nil {
		w.WriteHeader(http.StatusNotImplemented)
		fmt.Fprint(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(b.Bytes())
}

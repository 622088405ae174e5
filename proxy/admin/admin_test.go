package admin

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

var update = flag.Bool("update", false, "rewrite golden files")

func do(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", file, got, want)
	}
}

func testStore() *stats.Store {
	st := stats.NewStore()
	st.Counter("cluster.backend.upstream_rq_200").Add(3)
	st.Counter("cluster.backend.upstream_rq_total").Add(3)
	st.Counter("cluster.backend.upstream_cx_total")
	st.Gauge("cluster.backend.upstream_cx_active").Set(1)
	st.Gauge("server.live").Set(1)
	st.Counter("http.ingress_http.downstream_rq_2xx").Add(3)
	h := st.Histogram("cluster.backend.upstream_rq_time", stats.Milliseconds)
	h.Record(12)
	h.Record(40)
	st.MergeHistograms()
	return st
}

func TestStatsEndpoints(t *testing.T) {
	s := New(nil)
	s.MountStats(testStore())
	h := s.Handler()
	tests := []struct {
		target, golden, ctype string
	}{
		{"/stats", "stats.txt", "text/plain; charset=UTF-8"},
		{"/stats?format=text&usedonly", "stats_usedonly.txt", "text/plain; charset=UTF-8"},
		{"/stats?filter=upstream_rq", "stats_filter.txt", "text/plain; charset=UTF-8"},
		{"/stats?format=json", "stats.json", "application/json"},
		{"/stats?format=json&type=Histograms", "stats_histograms.json", "application/json"},
		{"/stats/prometheus", "stats.prom", "text/plain; charset=UTF-8"},
		{"/stats?format=prometheus&usedonly&filter=%5Ecluster", "stats_cluster_used.prom", "text/plain; charset=UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			rec := do(t, h, http.MethodGet, tc.target)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != tc.ctype {
				t.Errorf("content-type %q, want %q", ct, tc.ctype)
			}
			golden(t, tc.golden, rec.Body.Bytes())
		})
	}
}

func TestStatsBadParams(t *testing.T) {
	s := New(nil)
	s.MountStats(stats.NewStore())
	tests := []struct{ target, body string }{
		{"/stats?filter=%28unclosed", "Invalid re2 regex"},
		{"/stats/prometheus?filter=a%5B", "Invalid re2 regex"},
		{"/stats?format=xml", "usage: /stats?format="},
		{"/stats?type=Bogus", "invalid &type= param"},
	}
	for _, tc := range tests {
		rec := do(t, s.Handler(), http.MethodGet, tc.target)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%s: %d %q", tc.target, rec.Code, rec.Body.String())
		}
	}
}

func TestHelpHomeAndUnknown(t *testing.T) {
	s := New(nil)
	s.MountStats(stats.NewStore())
	s.Handle("/quitquitquit", "exit the server", true, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK\n") })
	h := s.Handler()

	rec := do(t, h, http.MethodGet, "/help")
	golden(t, "help.txt", rec.Body.Bytes())

	rec = do(t, h, http.MethodGet, "/")
	if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=UTF-8" {
		t.Errorf("home content-type %q", ct)
	}
	body := rec.Body.String()
	for _, want := range []string{"<a href='stats'>stats</a>", "print server stats", "<button class='button-as-link' form='quitquitquit'>quitquitquit</button>", "<a href='stats/prometheus'>"} {
		if !strings.Contains(body, want) {
			t.Errorf("home page lacks %q", want)
		}
	}

	rec = do(t, h, http.MethodGet, "/nope")
	if rec.Code != http.StatusNotFound || !strings.HasPrefix(rec.Body.String(), "invalid path. admin commands are:\n") {
		t.Errorf("unknown path: %d %q", rec.Code, rec.Body.String())
	}
	if rec.Header().Get("X-Content-Type-Options") != "nosniff" || rec.Header().Get("Cache-Control") != "no-cache, max-age=0" {
		t.Errorf("missing Envoy admin headers: %v", rec.Header())
	}
}

func TestMutatingEndpointsRequirePost(t *testing.T) {
	s := New(nil)
	calls := 0
	s.Handle("/drain_listeners", "drain listeners", true, func(w http.ResponseWriter, r *http.Request) { calls++ })
	for _, path := range []string{"/drain_listeners", "/logging"} {
		rec := do(t, s.Handler(), http.MethodGet, path)
		if rec.Code != http.StatusMethodNotAllowed || rec.Body.String() != "Method GET not allowed, POST required." {
			t.Errorf("GET %s: %d %q", path, rec.Code, rec.Body.String())
		}
	}
	if calls != 0 {
		t.Errorf("handler ran on GET")
	}
	if rec := do(t, s.Handler(), http.MethodPost, "/drain_listeners"); rec.Code != http.StatusOK || calls != 1 {
		t.Errorf("POST: %d calls=%d", rec.Code, calls)
	}
}

func TestDuplicatePathPanics(t *testing.T) {
	s := New(nil)
	defer func() {
		if recover() == nil {
			t.Error("duplicate Handle did not panic")
		}
	}()
	s.Handle("/help", "again", false, func(http.ResponseWriter, *http.Request) {})
}

func TestLogging(t *testing.T) {
	var lv slog.LevelVar
	lv.Set(slog.LevelInfo)
	s := New(&lv)
	h := s.Handler()

	rec := do(t, h, http.MethodPost, "/logging")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "active loggers:\n  admin: info\n") {
		t.Fatalf("list: %d %q", rec.Code, rec.Body.String())
	}

	tests := []struct {
		target string
		code   int
		level  slog.Level
		body   string
	}{
		{"/logging?level=debug", 200, slog.LevelDebug, "  http: debug\n"},
		{"/logging?level=warning", 200, slog.LevelWarn, "  router: warning\n"},
		{"/logging?paths=http:trace,router:error", 200, slog.LevelDebug - 4, "  http: trace\n"},
		{"/logging?upstream=critical", 200, slog.LevelDebug - 4, "  upstream: critical\n"},
		{"/logging?level=error", 200, slog.LevelError, "  http: error\n"},
		{"/logging?level=loud", 400, slog.LevelError, "error: unknown logger level\n\nusage: /logging?<name>=<level> (change single level)\n"},
		{"/logging?paths=nosuch:debug", 400, slog.LevelError, "error: unknown logger name\n"},
		{"/logging?paths=http", 400, slog.LevelError, "error: empty logger name or empty logger level\n"},
		{"/logging?level=debug&http=info", 400, slog.LevelError, "error: invalid number of parameters\n"},
		{"/logging?level=&paths=", 200, slog.LevelError, "active loggers:\n"},
	}
	for _, tc := range tests {
		rec := do(t, h, http.MethodPost, tc.target)
		if rec.Code != tc.code || lv.Level() != tc.level || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%s: code %d level %v body %q; want %d %v %q", tc.target, rec.Code, lv.Level(), rec.Body.String(), tc.code, tc.level, tc.body)
		}
	}
	rec = do(t, h, http.MethodPost, "/logging?level=nope")
	if !strings.Contains(rec.Body.String(), "levels: trace debug info warning error critical off \n") {
		t.Errorf("usage lacks levels line: %q", rec.Body.String())
	}
}

func TestServeAndShutdown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(nil)
	st := stats.NewStore()
	st.Counter("server.live").Inc()
	s.MountStats(st)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + l.Addr().String() + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "server.live: 1\n" {
		t.Errorf("body %q", body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
}

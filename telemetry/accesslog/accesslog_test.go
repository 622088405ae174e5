package accesslog

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

const fileType = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

// sparseContext has a start time and little else: most values are missing.
func sparseContext() *formatter.Context {
	return &formatter.Context{Stream: &streaminfo.Stream{
		StartTime: time.Date(2024, 1, 2, 3, 4, 5, 6_000_000, time.UTC),
		Protocol:  "HTTP/1.0",
	}}
}

func TestGoldenFormats(t *testing.T) {
	tests := []struct {
		golden string
		config string // the typed_config fields after @type and path
	}{
		{"default.golden", ``},
		{"format.golden", `format: "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION% %UPSTREAM_CLUSTER%\n"`},
		{"text_format.golden", `log_format: {text_format: "[%START_TIME(%Y-%m-%d)%] %REQ(X-MISSING)% %REQ(:AUTHORITY)% %DOWNSTREAM_REMOTE_ADDRESS%\n"}`},
		{"text_omit_empty.golden", `log_format: {omit_empty_values: true, text_format_source: {inline_string: "a=%REQ(X-MISSING)% b=%UPSTREAM_HOST%\n"}}`},
		{"json_untyped.golden", `json_format: {code: "%RESPONSE_CODE%", path: "%REQ(:PATH)%", missing: "%REQ(X-MISSING)%", dur: "%DURATION% ms"}`},
		{"json_typed.golden", `typed_json_format: {code: "%RESPONSE_CODE%", bytes: "%BYTES_RECEIVED%", port: "%DOWNSTREAM_REMOTE_PORT%", path: "%REQ(:PATH)%", missing: "%REQ(X-MISSING)%", dur: "%DURATION% ms", nested: {cluster: "%UPSTREAM_CLUSTER%", list: ["%PROTOCOL%", "%REQ(X-MISSING)%", 1.5]}, start: "%START_TIME%", multi: "%REQ(X-MULTI)%"}`},
		{"json_log_format.golden", `log_format: {json_format: {"z key": "%RESPONSE_FLAGS%", a: "%RESPONSE_CODE%", m: "%REQ(USER-AGENT)%", type: "%ACCESS_LOG_TYPE%"}}`},
		{"json_omit_empty.golden", `log_format: {omit_empty_values: true, json_format: {code: "%RESPONSE_CODE%", missing: "%REQ(X-MISSING)%", gone: {a: "%REQ(X-MISSING)%", b: "%UPSTREAM_HOST%"}, list: ["%REQ(X-MISSING)%"], text: "x=%REQ(X-MISSING)%"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			dir := t.TempDir()
			cfg := `[{name: envoy.access_loggers.file, typed_config: {"@type": ` + fileType + `, path: "$DIR/out.log"` +
				strings.TrimPrefix(","+tt.config, ",,") + `}}]`
			if tt.config == "" {
				cfg = `[{name: envoy.access_loggers.file, typed_config: {"@type": ` + fileType + `, path: "$DIR/out.log"}}]`
			}
			s, err := Compile(parseLogs(t, dir, cfg), Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.Log(testContext())
			s.Log(sparseContext())
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, tt.golden, readFile(t, filepath.Join(dir, "out.log")))
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		config string
		want   string
	}{
		{`[{name: envoy.access_loggers.http_grpc}]`, `access_log[0].name: unsupported access logger "envoy.access_loggers.http_grpc"`},
		{`[{name: x, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}}, {name: otel, typed_config: {"@type": type.googleapis.com/google.protobuf.Struct, value: {}}}]`,
			`access_log[1].typed_config: unsupported access logger "otel" (config type google.protobuf.Struct)`},
		{`[{name: f, typed_config: {"@type": ` + fileType + `}}]`, `access_log[0].typed_config: invalid FileAccessLog.Path`},
		{`[{name: f, typed_config: {"@type": ` + fileType + `, path: "$DIR/no/such/dir/x.log"}}]`, `access_log[0].typed_config: path: failed to open access log file`},
		{`[{name: f, typed_config: {"@type": ` + fileType + `, path: "$DIR/x", format: "%BOGUS%"}}]`, `access_log[0].typed_config: format: not supported field in StreamInfo: BOGUS`},
		{`[{name: f, typed_config: {"@type": ` + fileType + `, path: "$DIR/x", log_format: {text_format: "x", formatters: [{name: envoy.formatter.req_without_query, typed_config: {"@type": type.googleapis.com/google.protobuf.Struct, value: {}}}]}}}]`,
			`access_log[0].typed_config: log_format.formatters: formatter extensions (envoy.formatter.req_without_query) are not supported`},
		{`[{name: f, typed_config: {"@type": ` + fileType + `, path: "$DIR/x", typed_json_format: {a: true}}}]`, `access_log[0].typed_config: typed_json_format: a: only string values`},
		{`[{name: f, typed_config: {"@type": ` + fileType + `, path: "$DIR/x", log_format: {json_format: {a: {b: "%NOPE%"}}}}}]`, `access_log[0].typed_config: log_format.json_format: a: b: not supported field in StreamInfo: NOPE`},
		{`[{name: envoy.access_loggers.stdout, filter: {metadata_filter: {}}}]`, `access_log[0].filter.metadata_filter: not supported`},
		{`[{name: envoy.access_loggers.stdout, filter: {and_filter: {filters: [{not_health_check_filter: {}}, {extension_filter: {name: my.filter}}]}}}]`,
			`access_log[0].filter.and_filter.filters[1].extension_filter: unsupported access log filter "my.filter"`},
		{`[{name: envoy.access_loggers.stdout, filter: {status_code_filter: {}}}]`, `access_log[0].filter.invalid filter: invalid AccessLogFilter.StatusCodeFilter`},
		{`[{name: envoy.access_loggers.stdout, filter: {response_flag_filter: {flags: [XX]}}}]`, `access_log[0].filter.invalid filter`},
		{`[{name: envoy.access_loggers.stdout, filter: {header_filter: {header: {name: x, safe_regex_match: {regex: "("}}}}}]`, `access_log[0].filter.header_filter.header.safe_regex_match.regex: error parsing regexp`},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		s, err := Compile(parseLogs(t, dir, tt.config), Options{})
		if err == nil {
			s.Close()
			t.Errorf("%s: no error", tt.config)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s:\n got %v\nwant %s...", tt.config, err, tt.want)
		}
	}
}

func TestNilAndEmptySet(t *testing.T) {
	s, err := Compile(nil, Options{})
	if err != nil || s != nil {
		t.Fatalf("Compile(nil) = %v, %v", s, err)
	}
	s.Log(testContext()) // must not panic
	if s.Len() != 0 || s.Close() != nil {
		t.Fatal("nil set")
	}
}

func TestDeprecatedNameAndFilterOnFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Compile(parseLogs(t, dir, `
- name: envoy.file_access_log
  filter: {status_code_filter: {comparison: {op: GE, value: {default_value: 500, runtime_key: k}}}}
  typed_config: {"@type": `+fileType+`, path: "$DIR/a.log", format: "%RESPONSE_CODE%\n"}
`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ok, bad := testContext(), testContext()
	bad.Stream.ResponseCode = 503
	s.Log(ok)
	s.Log(bad)
	s.Log(nil) // no stream: code 0, filtered out
	s.Close()
	if got := readFile(t, filepath.Join(dir, "a.log")); got != "503\n" {
		t.Fatalf("got %q", got)
	}
}

func TestSharedFileAndStats(t *testing.T) {
	dir := t.TempDir()
	st := stats.NewStore()
	cfg := `
- name: a
  typed_config: {"@type": ` + fileType + `, path: "$DIR/shared.log", format: "a %RESPONSE_CODE%\n"}
- name: b
  typed_config: {"@type": ` + fileType + `, path: "$DIR/shared.log", log_format: {text_format: "b %PROTOCOL%\n"}}
`
	s1, err := Compile(parseLogs(t, dir, cfg), Options{Stats: st, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Compile(parseLogs(t, dir, cfg), Options{Stats: st, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if s1.files[0] != s2.files[1] {
		t.Fatal("same path not shared")
	}
	s1.Log(testContext())
	if got := st.Gauge("filesystem.write_total_buffered").Value(); got != int64(len("a 204\nb HTTP/1.1\n")) {
		t.Errorf("write_total_buffered = %d", got)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	// s2 still holds the file: nothing flushed yet (interval is an hour).
	if got := readFile(t, filepath.Join(dir, "shared.log")); got != "" {
		t.Fatalf("flushed early: %q", got)
	}
	s2.Log(sparseContext())
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	want := "a 204\nb HTTP/1.1\na 0\nb HTTP/1.0\n"
	if got := readFile(t, filepath.Join(dir, "shared.log")); got != want {
		t.Fatalf("got %q want %q", got, want)
	}
	if v := st.Counter("filesystem.write_buffered").Value(); v != 4 {
		t.Errorf("write_buffered = %d", v)
	}
	if v := st.Counter("filesystem.write_completed").Value(); v != 1 {
		t.Errorf("write_completed = %d", v)
	}
	if v := st.Gauge("filesystem.write_total_buffered").Value(); v != 0 {
		t.Errorf("write_total_buffered = %d after close", v)
	}
	// Logging after Close is dropped, not a panic.
	s2.Log(testContext())
}

func TestBackgroundFlush(t *testing.T) {
	dir := t.TempDir()
	st := stats.NewStore()
	s, err := Compile(parseLogs(t, dir, `[{name: f, typed_config: {"@type": `+fileType+`, path: "$DIR/t.log", format: "x\n"}}]`),
		Options{Stats: st, FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Log(testContext())
	path := filepath.Join(dir, "t.log")
	deadline := time.Now().Add(5 * time.Second)
	for readFile(t, path) != "x\n" {
		if time.Now().After(deadline) {
			t.Fatal("not flushed by the timer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st.Counter("filesystem.flushed_by_timer").Value() == 0 {
		t.Error("flushed_by_timer not counted")
	}
}

func TestLargeBufferFlushes(t *testing.T) {
	dir := t.TempDir()
	s, err := Compile(parseLogs(t, dir, `[{name: f, typed_config: {"@type": `+fileType+`, path: "$DIR/big.log", format: "%REQ(X-BIG)%\n"}}]`),
		Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := testContext()
	ctx.Request.Add("x-big", strings.Repeat("b", 1023))
	for i := 0; i < DefaultFlushSize/1024+1; i++ {
		s.Log(ctx)
	}
	path := filepath.Join(dir, "big.log")
	deadline := time.Now().Add(5 * time.Second)
	for len(readFile(t, path)) < DefaultFlushSize {
		if time.Now().After(deadline) {
			t.Fatal("a full buffer was not flushed before the interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Compile(parseLogs(t, dir, `[{name: f, typed_config: {"@type": `+fileType+`, path: "$DIR/r.log", format: "%RESPONSE_CODE%\n"}}]`),
		Options{FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	path := filepath.Join(dir, "r.log")
	s.Log(testContext())
	deadline := time.Now().Add(5 * time.Second)
	for readFile(t, path) != "204\n" {
		if time.Now().After(deadline) {
			t.Fatal("not flushed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	Reopen()
	ctx := testContext()
	ctx.Stream.ResponseCode = 500
	for {
		s.Log(ctx)
		b, _ := os.ReadFile(path)
		if strings.HasPrefix(string(b), "500\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not reopened")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func BenchmarkSetLogDefault(b *testing.B) {
	dir := b.TempDir()
	s, err := Compile(parseLogs(b, dir, `[{name: f, typed_config: {"@type": `+fileType+`, path: "$DIR/bench.log"}}]`), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := testContext()
	s.Log(ctx)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Log(ctx)
	}
}

func TestLogDoesNotAllocate(t *testing.T) {
	for _, format := range []string{
		``,
		`, typed_json_format: {code: "%RESPONSE_CODE%", path: "%REQ(:PATH)%", missing: "%REQ(X-MISSING)%", nested: {ua: "%REQ(USER-AGENT)%"}}`,
	} {
		dir := t.TempDir()
		s, err := Compile(parseLogs(t, dir, `[{name: f, filter: {status_code_filter: {comparison: {op: GE, value: {default_value: 200, runtime_key: k}}}},
		  typed_config: {"@type": `+fileType+`, path: "$DIR/a.log"`+format+`}}]`), Options{FlushInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx := testContext()
		if n := testing.AllocsPerRun(200, func() { s.Log(ctx) }); n != 0 {
			t.Errorf("format %q: %v allocs per Log", format, n)
		}
		s.Close()
	}
}

func TestStdoutAndStderr(t *testing.T) {
	for _, tc := range []struct {
		name string
		std  **os.File
	}{
		{"stdout", &os.Stdout},
		{"stderr", &os.Stderr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			orig := *tc.std
			*tc.std = w
			typ := "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.Stdout"
			if tc.name == "stderr" {
				typ = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.Stderr"
			}
			s, err := Compile(parseLogs(t, "", `
- {name: a, typed_config: {"@type": `+typ+`AccessLog, log_format: {text_format: "%RESPONSE_CODE% %PROTOCOL%\n"}}}
- {name: b, typed_config: {"@type": `+typ+`AccessLog}}
`), Options{FlushInterval: time.Hour})
			*tc.std = orig
			if err != nil {
				t.Fatal(err)
			}
			s.Log(sparseContext())
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			want := "0 HTTP/1.0\n" + `[2024-01-02T03:04:05.006Z] "- - HTTP/1.0" 0 - 0 0 - - "-" "-" "-" "-" "-"` + "\n"
			if string(b) != want {
				t.Errorf("got %q want %q", b, want)
			}
		})
	}
}

func TestConcurrentLogging(t *testing.T) {
	dir := t.TempDir()
	s, err := Compile(parseLogs(t, dir, `[{name: f, typed_config: {"@type": `+fileType+`, path: "$DIR/c.log", format: "%RESPONSE_CODE% %REQ(USER-AGENT)%\n"}}]`),
		Options{FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 500
	done := make(chan struct{})
	for g := 0; g < goroutines; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			ctx := testContext()
			for i := 0; i < each; i++ {
				s.Log(ctx)
			}
		}()
	}
	for g := 0; g < goroutines; g++ {
		<-done
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, filepath.Join(dir, "c.log"))
	if want := strings.Repeat("204 nsq2http\n", goroutines*each); got != want {
		t.Fatalf("got %d bytes, want %d; lines intact: %v", len(got), len(want), strings.Count(got, "204 nsq2http\n"))
	}
}

func TestFailedCompileReleasesFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := Compile(parseLogs(t, dir, `
- {name: f, typed_config: {"@type": `+fileType+`, path: "$DIR/held.log"}}
- {name: envoy.access_loggers.unknown}
`), Options{})
	if err == nil {
		t.Fatal("no error")
	}
	files.mu.Lock()
	_, held := files.byPath[filepath.Join(dir, "held.log")]
	files.mu.Unlock()
	if held {
		t.Fatal("file of a failed Compile is still open")
	}
}

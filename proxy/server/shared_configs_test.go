package server_test

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// TestSharedEnvoyConfigs is the compatibility measure: every real-world
// bootstrap in ../shared/envoy-configs that loads must either compile or be
// refused with one line that names what is unsupported or missing.
func TestSharedEnvoyConfigs(t *testing.T) {
	dir := "../../../shared/envoy-configs"
	files, _ := filepath.Glob(filepath.Join(dir, "*.y*ml"))
	if len(files) == 0 { // from a worktree under /work/wt/<name>
		dir = "../../../../shared/envoy-configs"
		files, _ = filepath.Glob(filepath.Join(dir, "*.y*ml"))
	}
	if len(files) == 0 {
		t.Skip("shared configs not present")
	}
	var ok []string
	reasons := map[string]int{}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		b, err := bootstrap.LoadBytes(filepath.Base(f), data)
		if err != nil {
			continue // templates and fragments; the loader's own test covers them
		}
		_, err = server.New(server.Options{Bootstrap: b, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil {
			ok = append(ok, filepath.Base(f))
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") {
			t.Errorf("%s: error is not one line: %q", f, msg)
		}
		if !strings.Contains(msg, "not supported") && !strings.Contains(msg, "unsupported") && !strings.Contains(msg, "malformed IP address: $") && !strings.Contains(msg, "no such file or directory") {
			t.Errorf("%s: refused without naming an unsupported feature: %s", filepath.Base(f), msg)
		}
		// Tally by the innermost reason, for the log.
		parts := strings.Split(msg, ": ")
		reasons[strings.Join(parts[max(0, len(parts)-2):], ": ")]++
	}
	sort.Strings(ok)
	for _, name := range mustCompile {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			continue
		}
		if i := sort.SearchStrings(ok, name); i == len(ok) || ok[i] != name {
			t.Errorf("%s: expected to compile", name)
		}
	}
	t.Logf("%d configs compile: %s", len(ok), strings.Join(ok, ", "))
	type kv struct {
		k string
		v int
	}
	var rs []kv
	for k, v := range reasons {
		rs = append(rs, kv{k, v})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].v > rs[j].v })
	for _, r := range rs {
		t.Logf("%3d refused: %s", r.v, r.k)
	}
	if len(ok) < 5 {
		t.Errorf("only %d shared configs compile", len(ok))
	}
}

// mustCompile are shared configs that compile today; a regression fails.
var mustCompile = []string{
	// local_reply_config: a GET-only mapper with an HTML body_format_override.
	"envoy__configs__envoy-demo.yaml",
	// Request mirroring with cluster_header.
	"envoyproxy-examples__route-mirror__envoy.yaml",
	// Tracing: Zipkin (also through Jaeger's Zipkin endpoint) and OpenTelemetry.
	"envoyproxy-examples__zipkin__envoy-1.yaml",
	"envoyproxy-examples__zipkin__envoy-2.yaml",
	"envoyproxy-examples__zipkin__envoy-front-proxy.yaml",
	"envoyproxy-examples__jaeger-tracing__envoy.yaml",
	"envoyproxy-examples__jaeger-tracing__service1-envoy-jaeger.yaml",
	"envoyproxy-examples__jaeger-tracing__service2-envoy-jaeger.yaml",
	"envoyproxy-examples__opentelemetry__envoy-1.yaml",
	"envoyproxy-examples__opentelemetry__envoy-2.yaml",
	"envoyproxy-examples__opentelemetry__envoy-front-proxy.yaml",
	// HTTP filters: CORS and local rate limit.
	"envoyproxy-examples__cors__backend__envoy.yaml",
	"envoyproxy-examples__cors__frontend__envoy.yaml",
	"envoyproxy-examples__local_ratelimit__envoy.yaml",
	// HTTP filters: compressor (brotli, zstd).
	"envoyproxy-examples__brotli__envoy.yaml",
	"envoyproxy-examples__zstd__envoy.yaml",
	// HTTP filters: external authorization (gRPC, HTTP and OPA services).
	"envoyproxy-examples__ext_authz__config__grpc-service__v3.yaml",
	"envoyproxy-examples__ext_authz__config__http-service.yaml",
	"envoyproxy-examples__ext_authz__config__opa-service__v3.yaml",
	// HTTP filters: decompressor (with the gzip compressor) and CSRF.
	"envoyproxy-examples__gzip__envoy.yaml",
	"envoyproxy-examples__csrf__samesite__envoy.yaml",
	"envoyproxy-examples__csrf__crosssite__envoy.yaml",
	// The gRPC HTTP/1.1 bridge and the upstream PROXY protocol transport socket.
	"envoyproxy-examples__grpc-bridge__client__envoy-proxy.yaml",
	"envoy__configs__proxy_protocol.yaml",
}

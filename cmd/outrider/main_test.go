package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, body string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			code, out, errs := runCmd(t, "--mode", "validate", "-c", f)
			if code != 0 || !strings.Contains(out, "OK") {
				t.Fatalf("validate %s: exit %d\n%s%s", f, code, out, errs)
			}
		})
	}
}

// Bad configs fail with one line naming the file, the field and the reason.
func TestValidateRejects(t *testing.T) {
	good, err := os.ReadFile("../../examples/quickstart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"malformed yaml", "admin: [", []string{"bad.yaml"}},
		{"unknown field", "admn: {}\n", []string{"bad.yaml", "admn"}},
		{"unknown type", strings.Replace(string(good), "envoy.extensions.filters.http.router.v3.Router", "envoy.extensions.filters.http.nope.v3.Nope", 1), []string{"bad.yaml", "nope"}},
		{"unsupported extension", strings.Replace(string(good), "envoy.extensions.filters.http.router.v3.Router", "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb", 1), []string{"bad.yaml", "http_filters[0]", "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"}},
		{"missing cluster", strings.Replace(string(good), "route: { cluster: backend }", "route: { cluster: nowhere }", 1), []string{"bad.yaml", "nowhere"}},
		{"bad regex", strings.Replace(string(good), `- match: { prefix: "/" }
                route: { cluster: backend }`, `- match: { safe_regex: { regex: "a(" } }
                route: { cluster: backend }`, 1), []string{"bad.yaml", "safe_regex"}},
		{"duplicate cluster", strings.Replace(string(good), "  clusters:\n", "  clusters:\n  - name: backend\n    load_assignment: {cluster_name: backend}\n", 1), []string{"bad.yaml", "duplicate", "backend"}},
		{"validation rule", strings.Replace(string(good), "connect_timeout: 1s", "connect_timeout: -1s", 1), []string{"bad.yaml", "connect_timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, "bad.yaml", tc.yaml)
			code, _, errs := runCmd(t, "--mode", "validate", "-c", p)
			if code == 0 {
				t.Fatal("validate accepted a bad config")
			}
			if n := strings.Count(strings.TrimSpace(errs), "\n"); n != 0 {
				t.Errorf("error is %d lines, want one:\n%s", n+1, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("error lacks %q: %s", w, errs)
				}
			}
		})
	}
	code, _, errs := runCmd(t, "-c", "/nonexistent/envoy.yaml", "--mode", "validate")
	if code == 0 || !strings.Contains(errs, "/nonexistent/envoy.yaml") {
		t.Errorf("unreadable file: exit %d, %q", code, errs)
	}
}

func TestConfigYAMLMergedOverFile(t *testing.T) {
	// --config-yaml alone is a whole bootstrap; over a file it is merged.
	code, out, errs := runCmd(t, "--mode", "validate", "-c", "../../examples/quickstart.yaml",
		"--config-yaml", "node: {id: merged, cluster: c}")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
}

// Envoy Gateway starts Envoy with exactly this command line.
func TestEnvoyGatewayCommandLine(t *testing.T) {
	adminPath := filepath.Join(t.TempDir(), "admin-address")
	yaml := `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources: {}`
	code, out, errs := runCmd(t, "--service-cluster", "gw", "--service-node", "node-1", "--config-yaml", yaml,
		"--log-level", "warn", "--cpuset-threads", "--drain-strategy", "immediate",
		"--component-log-level", "misc:error", "--drain-time-s", "60", "--admin-address-path", adminPath,
		"--mode", "init_only")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	b, err := os.ReadFile(adminPath)
	if err != nil || !strings.HasPrefix(string(b), "127.0.0.1:") || strings.HasSuffix(string(b), ":0") {
		t.Fatalf("admin address file = %q, %v", b, err)
	}
}

func TestFlags(t *testing.T) {
	if code, out, _ := runCmd(t, "--version"); code != 0 || !strings.Contains(out, "outrider version") {
		t.Errorf("--version: %d %q", code, out)
	}
	if code, _, errs := runCmd(t, "--no-such-flag"); code == 0 || !strings.Contains(errs, "no-such-flag") {
		t.Errorf("unknown flag accepted")
	}
	if code, _, errs := runCmd(t, "-l", "loud", "-c", "x"); code == 0 || !strings.Contains(errs, "loud") {
		t.Errorf("bad level: %q", errs)
	}
	// Hot-restart flags are accepted and have no effect.
	if code, _, errs := runCmd(t, "--mode", "validate", "-c", "../../examples/quickstart.yaml", "--base-id", "3",
		"--restart-epoch", "0", "--disable-hot-restart", "--parent-shutdown-time-s", "5", "--concurrency", "2",
		"--local-address-ip-version", "v4", "--log-format", "%v"); code != 0 {
		t.Errorf("compatibility flags rejected: %s", errs)
	}
	// --spiffe-workload-api takes a Workload API address; a bad one is named.
	if code, _, errs := runCmd(t, "--mode", "validate", "-c", "../../examples/quickstart.yaml", "--spiffe-workload-api", "unix:///tmp/agent.sock"); code != 0 {
		t.Errorf("--spiffe-workload-api rejected: %s", errs)
	}
	if code, _, errs := runCmd(t, "--mode", "validate", "-c", "../../examples/quickstart.yaml", "--spiffe-workload-api", "ftp://x"); code == 0 || !strings.Contains(errs, "--spiffe-workload-api") {
		t.Errorf("bad --spiffe-workload-api: %d %q", code, errs)
	}
}

// A port already bound by another process fails start-up with one line
// naming the listener and the address.
func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	yaml := fmt.Sprintf(`static_resources:
  listeners:
  - name: taken
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains: [{filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c}}]}]
  clusters: [{name: c, load_assignment: {cluster_name: c}}]`, port)
	code, _, errs := runCmd(t, "--config-yaml", yaml)
	if code == 0 {
		t.Fatal("started on a port in use")
	}
	want := fmt.Sprintf(`listener "taken": listen tcp 127.0.0.1:%d: bind: address already in use`, port)
	if !strings.Contains(errs, want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("error %q, want one line containing %q", errs, want)
	}
}

package bootstrap

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// sharedConfigsDir finds ../shared/envoy-configs relative to the repo root
// (the directory holding go.mod). A worktree may sit deeper than the main
// checkout, so each ancestor of the root is tried as well.
func sharedConfigsDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 64; i++ {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("no go.mod above the test directory")
		}
		dir = parent
	}
	for i := 0; i < 64; i++ {
		cand := filepath.Join(dir, "..", "shared", "envoy-configs")
		if st, err := os.Stat(cand); err == nil && st.IsDir() {
			return cand
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	t.Skip("../shared/envoy-configs not found")
	return ""
}

var templateMarker = regexp.MustCompile(`\{\{|\$\{?[A-Za-z_][A-Za-z0-9_]*`)

// isTemplate reports whether a config needs substitution before use.
func isTemplate(data []byte) bool { return templateMarker.Match(data) }

// isFragment reports whether a YAML/JSON document is an xDS resource file or
// fragment rather than a bootstrap: its top level has "resources" or "@type"
// or none of the bootstrap's top-level fields.
func isFragment(data []byte) bool {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return false
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return true // a list of resources, or a scalar
	}
	if _, ok := top["resources"]; ok {
		return true
	}
	if _, ok := top["@type"]; ok {
		return true
	}
	for _, k := range []string{"static_resources", "dynamic_resources", "admin", "node", "layered_runtime",
		"staticResources", "dynamicResources", "cluster_manager", "overload_manager", "stats_sinks"} {
		if _, ok := top[k]; ok {
			return false
		}
	}
	return true
}

// expectedFailures lists shared configs Envoy itself rejects, with the
// substring of the reason.
var expectedFailures = map[string]string{
	// v2-era config ("config" instead of "typed_config"): Envoy v3 rejects it.
	"envoy__configs__original-dst-cluster__proxy_config.yaml": `filters[0]: unknown field "config"`,
	// Contrib extensions: only the envoy-contrib build knows these types, and
	// their protos are in go-control-plane's separate contrib module.
	"envoyproxy-examples__golang-http__envoy.yaml":    `unknown type "type.googleapis.com/envoy.extensions.filters.http.golang.v3alpha.Config"`,
	"envoyproxy-examples__golang-network__envoy.yaml": `unknown type "type.googleapis.com/envoy.extensions.filters.network.golang.v3alpha.Config"`,
	"envoyproxy-examples__kafka-mesh__envoy.yaml":     `unknown type "type.googleapis.com/envoy.extensions.filters.network.kafka_broker.v3.KafkaBroker"`,
	"envoyproxy-examples__kafka__envoy.yaml":          `unknown type "type.googleapis.com/envoy.extensions.filters.network.kafka_broker.v3.KafkaBroker"`,
	"envoyproxy-examples__mysql__envoy.yaml":          `unknown type "type.googleapis.com/envoy.extensions.filters.network.mysql_proxy.v3.MySQLProxy"`,
	"envoyproxy-examples__postgres__envoy.yaml":       `unknown type "type.googleapis.com/envoy.extensions.filters.network.postgres_proxy.v3alpha.PostgresProxy"`,
}

func TestSharedEnvoyConfigs(t *testing.T) {
	dir := sharedConfigsDir(t)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ file, status, detail string }
	var rows []row
	loaded := 0
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".json")) {
			continue
		}
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// No loader call may panic, templates and fragments included.
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: panic: %v", name, r)
				}
			}()
			_, _ = LoadBytes(path, data)
			_, _ = Load(Source{Path: path})
		}()
		switch {
		case isTemplate(data):
			rows = append(rows, row{name, "template", ""})
			continue
		case isFragment(data):
			rows = append(rows, row{name, "fragment", ""})
			continue
		}
		_, err = Load(Source{Path: path})
		if err == nil {
			loaded++
			rows = append(rows, row{name, "ok", ""})
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, path) {
			t.Errorf("%s: error is not one line naming the file: %q", name, msg)
		}
		want, expected := expectedFailures[name]
		switch {
		case !expected:
			t.Errorf("%s: unexpected failure: %s", name, msg)
		case !strings.Contains(msg, want):
			t.Errorf("%s: failure %q does not contain %q", name, msg, want)
		}
		rows = append(rows, row{name, "FAIL", strings.TrimPrefix(msg, path+": ")})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].file < rows[j].file })
	var b bytes.Buffer
	for _, r := range rows {
		b.WriteString(r.status + "\t" + r.file)
		if r.detail != "" {
			b.WriteString("\t" + r.detail)
		}
		b.WriteByte('\n')
	}
	t.Logf("%d bootstraps loaded; summary:\n%s", loaded, b.String())
	if loaded == 0 {
		t.Error("no shared config loaded")
	}
}

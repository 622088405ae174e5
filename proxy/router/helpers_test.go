package router

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// parseRC turns YAML into a RouteConfiguration the way Envoy reads config.
func parseRC(t testing.TB, y string) *routev3.RouteConfiguration {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	rc := &routev3.RouteConfiguration{}
	if err := protojson.Unmarshal(j, rc); err != nil {
		t.Fatalf("protojson: %v", err)
	}
	return rc
}

func mustCompile(t testing.TB, y string) *Table {
	t.Helper()
	tb, err := Compile(parseRC(t, y), Options{})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tb
}

// req builds a request: "GET host /path" followed by "name: value" lines.
func req(line string, hdrs ...string) *headers.Map {
	f := strings.SplitN(line, " ", 3)
	m := &headers.Map{}
	m.Add(":method", f[0])
	m.Add(":authority", f[1])
	if len(f) > 2 {
		m.Add(":path", f[2])
	}
	m.Add(":scheme", "http")
	for _, h := range hdrs {
		k, v, _ := strings.Cut(h, ": ")
		m.Add(k, v)
	}
	return m
}

func dump(m *headers.Map) string {
	var b strings.Builder
	for _, f := range m.Fields() {
		b.Write(f.Name)
		b.WriteString(": ")
		b.Write(f.Value)
		b.WriteString("\n")
	}
	return b.String()
}

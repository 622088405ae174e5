package cors_test

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// sharedConfig is the path of a real-world config in ../shared/envoy-configs
// above the repository root; the test is skipped without it.
func sharedConfig(t *testing.T, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for range 64 {
		p := filepath.Join(dir, "..", "shared", "envoy-configs", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	t.Skipf("%s not found in ../shared/envoy-configs", name)
	return ""
}

// The envoyproxy examples using the CORS filter pass --mode validate: the
// bootstrap loads and the server compiles it.
func TestSharedConfigsValidate(t *testing.T) {
	for _, name := range []string{
		"envoyproxy-examples__cors__backend__envoy.yaml",
		"envoyproxy-examples__cors__frontend__envoy.yaml",
	} {
		t.Run(name, func(t *testing.T) {
			path := sharedConfig(t, name)
			b, err := bootstrap.Load(bootstrap.Source{Path: path})
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if _, err := server.New(server.Options{Bootstrap: b, ConfigPath: path,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
				t.Fatalf("validate: %v", err)
			}
		})
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
	"github.com/outrider-proxy/outrider/xds/democp"
)

// The demo: outrider-cp serves examples/xds-cp/resources.yaml, outrider runs
// examples/xds-bootstrap.yaml (ports made free), and editing the resources
// file changes what traffic gets.
func TestDemoRouteChangeReachesTraffic(t *testing.T) {
	res, err := os.ReadFile("../../examples/xds-cp/resources.yaml")
	if err != nil {
		t.Fatal(err)
	}
	boot, err := os.ReadFile("../../examples/xds-bootstrap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	port := servertest.DeadPort(t)
	path := filepath.Join(t.TempDir(), "resources.yaml")
	v1 := strings.Replace(string(res), "port_value: 10000", fmt.Sprintf("port_value: %d", port), 1)
	if err := os.WriteFile(path, []byte(v1), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- democp.Serve(ctx, ln, path, 10*time.Millisecond, nil) }()
	t.Cleanup(func() { cancel(); <-done })

	b := strings.NewReplacer("port_value: 18000", fmt.Sprintf("port_value: %d", ln.Addr().(*net.TCPAddr).Port), "port_value: 9901", "port_value: 0").Replace(string(boot))
	servertest.Start(t, b)
	get := func() string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(body))
	}
	wait := func(want string) {
		t.Helper()
		var got string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if got = get(); got == want {
				return
			}
		}
		t.Fatalf("got %q, want %q", got, want)
	}
	wait("hello from outrider-cp v1")
	v2 := strings.Replace(v1, "outrider-cp v1", "outrider-cp v2", 1)
	if err := os.WriteFile(path+".new", []byte(v2), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	wait("hello from outrider-cp v2")
}

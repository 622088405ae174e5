package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGTERM stops accepting, lets the in-flight request finish, and exits 0 as
// soon as no connection is left, long before --drain-time-s.
func TestSIGTERMDrainsAndExits(t *testing.T) {
	release := make(chan struct{})
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "finished")
	})}
	go upSrv.Serve(upLn)
	defer upSrv.Close()
	cfg := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config:
            virtual_hosts: [{name: vh, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: up}}]}]
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
  clusters:
  - name: up
    load_assignment:
      cluster_name: up
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`, upLn.Addr().(*net.TCPAddr).Port)
	adminPath := filepath.Join(t.TempDir(), "admin")
	exited := make(chan int, 1)
	go func() {
		exited <- run([]string{"--config-yaml", cfg, "--admin-address-path", adminPath, "--drain-time-s", "30",
			"--drain-strategy", "immediate", "-l", "error"}, io.Discard, io.Discard)
	}()
	var admin string
	for deadline := time.Now().Add(10 * time.Second); admin == ""; {
		if b, err := os.ReadFile(adminPath); err == nil && len(b) > 0 {
			admin = string(b)
		} else if time.Now().After(deadline) {
			t.Fatal("server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get("http://" + admin + "/listeners")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	front := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(b)), "front::"))

	inflight := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + front + "/slow")
		if err != nil {
			inflight <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- string(b)
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", front, time.Second); err == nil {
		c.Close()
		t.Error("listener still accepting after SIGTERM")
	}
	select {
	case code := <-exited:
		t.Fatalf("exited (%d) with a request in flight", code)
	default:
	}
	close(release)
	if got := <-inflight; got != "finished" {
		t.Fatalf("in-flight request: %q", got)
	}
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("took %v to exit", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after the last connection closed")
	}
}

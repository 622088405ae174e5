package server_test

import (
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
)

func fileLog(path, format string) string {
	return fmt.Sprintf(`- name: envoy.access_loggers.file
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    path: %s
    log_format: {text_format_source: {inline_string: %q}}`, path, format)
}

// Access logs of the connection manager, the router (upstream_log) and
// tcp_proxy are written with Envoy's formatter, response flags included.
func TestAccessLogs(t *testing.T) {
	dir := t.TempDir()
	hcmLog, upLog, tcpLog := filepath.Join(dir, "hcm.log"), filepath.Join(dir, "up.log"), filepath.Join(dir, "tcp.log")
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	routes := `- match: {prefix: "/dead"}
  route: {cluster_header: x-nowhere}
- match: {prefix: "/"}
  route: {cluster: up}`
	yaml := httpBootstrap(up.port(), routes, "access_log:\n"+indent(fileLog(hcmLog, "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% %UPSTREAM_CLUSTER%\n"), 2))
	yaml = strings.Replace(yaml, `typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}`,
		"typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n              upstream_log:\n"+
			indent(fileLog(upLog, "%UPSTREAM_HOST% %RESPONSE_CODE% %ACCESS_LOG_TYPE%\n"), 14), 1)
	echo := startEcho(t)
	yaml = strings.Replace(yaml, "  clusters:\n", fmt.Sprintf(`  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: echo
          access_log:
%s
  clusters:
  - name: echo
    load_assignment: {cluster_name: echo, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, indent(fileLog(tcpLog, "%UPSTREAM_CLUSTER% %BYTES_RECEIVED% %BYTES_SENT% %ACCESS_LOG_TYPE%\n"), 10), echo), 1)
	p := servertest.Start(t, yaml)
	for _, path := range []string{"/ok", "/dead"} {
		resp, err := http.Get(p.URL("front", path))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	c, err := net.Dial("tcp", p.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, "abc")
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(c)
	c.Close()
	p.WaitStat("tcp.t.downstream_cx_total", 1)
	time.Sleep(100 * time.Millisecond) // the tcp_proxy log is written as its connection ends
	p.Srv.Shutdown()                   // flushes the logs

	for path, want := range map[string][]string{
		hcmLog: {"GET /ok 200 - 5 up\n", "GET /dead 503 NC 0 -\n"},
		upLog:  {fmt.Sprintf("127.0.0.1:%d 200 UpstreamEnd\n", up.port())},
		tcpLog: {"echo 3 6 TcpConnectionEnd\n"},
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s lacks %q:\n%s", filepath.Base(path), w, b)
			}
		}
	}
}

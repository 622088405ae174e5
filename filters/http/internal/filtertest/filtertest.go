// Package filtertest is the end-to-end harness the HTTP filter tests share:
// a bootstrap whose listeners run the filter under test before the router,
// an upstream on 127.0.0.1 port 0, and requests sent through the proxy. Only
// tests import it; every helper fails the test on a transport error.
package filtertest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// CatchAll is a route config with one virtual host for every domain whose
// one route sends everything to the cluster "up".
const CatchAll = `virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/"}
    route: {cluster: up}`

// Listener is one static listener named name on 127.0.0.1 port 0 whose HTTP
// connection manager (stat prefix name) has the route config routeConfig
// (its fields; "" is CatchAll) and the HTTP filters filters (a YAML list)
// before the router. Both YAML pieces may come at any indent: Listener
// re-indents them.
func Listener(name, routeConfig, filters string) string {
	if routeConfig == "" {
		routeConfig = CatchAll
	}
	return fmt.Sprintf(`
  - name: %[1]s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %[1]s
          route_config:
%[2]s
          http_filters:
%[3]s
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`, name, Indent(routeConfig, 12), Indent(filters, 10))
}

// Config is a bootstrap with an admin listener on 127.0.0.1 port 0, the
// listeners (from Listener) and the cluster "up" to 127.0.0.1:upPort. The
// clusters list comes last, so more clusters may be appended to the result.
func Config(upPort int, listeners ...string) string {
	return "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\nstatic_resources:\n  listeners:" +
		strings.Join(listeners, "") + fmt.Sprintf(`
  clusters:
  - name: up
    connect_timeout: 1s
    load_assignment: {cluster_name: up, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, upPort)
}

// Indent moves the lines of s so that the least indented non-blank one
// starts at column n, keeping their relative indent; blank lines stay empty
// and the leading and trailing newlines of s are dropped.
func Indent(s string, n int) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	least := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		if d := len(l) - len(strings.TrimLeft(l, " ")); least < 0 || d < least {
			least = d
		}
	}
	pad := strings.Repeat(" ", n)
	for i, l := range lines {
		if strings.TrimSpace(l) == "" {
			lines[i] = ""
			continue
		}
		lines[i] = pad + l[least:]
	}
	return strings.Join(lines, "\n")
}

// Start serves h on 127.0.0.1 port 0 as the upstream and runs the proxy with
// the bootstrap config(its port); both stop when the test ends.
func Start(t testing.TB, h http.Handler, config func(upPort int) string) *servertest.Proxy {
	t.Helper()
	up := httptest.NewServer(h)
	t.Cleanup(up.Close)
	return servertest.Start(t, config(up.Listener.Addr().(*net.TCPAddr).Port))
}

// Client is the client Do uses when given none: it neither negotiates nor
// decodes compression itself, and gives up after 10 seconds.
var Client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}

// NewRequest is a request for method and url with body ("" for none) and
// the header pairs hdr (name, value, ...), each set in turn.
func NewRequest(t testing.TB, method, url, body string, hdr ...string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

// Do sends req with c (nil: Client) and returns the response, its Body read
// to the end and closed, and the body.
func Do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	if c == nil {
		c = Client
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

// ReadPiece reads len(want) bytes of r and fails the test unless they are
// want and arrive within 5 seconds: the proxy passed a piece of a body on
// before the upstream sent the rest.
func ReadPiece(t testing.TB, r io.Reader, want string) {
	t.Helper()
	got := make([]byte, len(want))
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(r, got); done <- err }()
	select {
	case err := <-done:
		if err != nil || string(got) != want {
			t.Fatalf("first piece %q, %v; want %q", got, err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first piece did not arrive before the rest was sent")
	}
}

package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

const routeToUp = `- match: {prefix: "/"}
  route: {cluster: up}`

func TestProxiesRequestAndHeaders(t *testing.T) {
	var seen atomic.Pointer[http.Request]
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r)
		w.Header().Set("X-Up", "yes")
		w.Header().Set("Keep-Alive", "timeout=5") // hop-by-hop: must not reach the client
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	req, _ := http.NewRequest("GET", p.URL("front", "/a/b?x=1"), nil)
	req.Header.Set("Connection", "keep-alive, X-Drop")
	req.Header.Set("X-Drop", "1")
	req.Header.Set("Te", "trailers")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello /a/b" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	for h, want := range map[string]string{"Server": "envoy", "X-Up": "yes"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("response %s = %q, want %q", h, got, want)
		}
	}
	if resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" || resp.Header.Get("Date") == "" {
		t.Errorf("missing x-envoy-upstream-service-time or date: %v", resp.Header)
	}
	if resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop Keep-Alive forwarded to client")
	}
	r := seen.Load()
	if r.Header.Get("X-Drop") != "" {
		t.Errorf("header named in Connection was forwarded")
	}
	if r.Header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("x-forwarded-proto = %q", r.Header.Get("X-Forwarded-Proto"))
	}
	if id := r.Header.Get("X-Request-Id"); len(id) != 36 || id[14] != '4' {
		t.Errorf("x-request-id = %q, want a v4 UUID", id)
	}
	if r.Header.Get("X-Envoy-Expected-Rq-Timeout-Ms") != "15000" {
		t.Errorf("x-envoy-expected-rq-timeout-ms = %q", r.Header.Get("X-Envoy-Expected-Rq-Timeout-Ms"))
	}
	if r.URL.RawQuery != "x=1" || r.Host != p.Addr("front") {
		t.Errorf("upstream saw query %q host %q", r.URL.RawQuery, r.Host)
	}
	p.WaitStat("http.ingress.downstream_rq_2xx", 1)
	p.WaitStat("http.ingress.downstream_rq_total", 1)
	p.WaitStat("cluster.up.upstream_rq_2xx", 1)
	p.WaitStat("cluster.up.upstream_rq_200", 1)
	p.WaitStat("cluster.up.upstream_cx_total", 1)
	p.WaitStat("cluster.up.upstream_rq_total", 1)
}

func TestKeepAliveReusesUpstreamConnection(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	for i := 0; i < 20; i++ {
		resp, err := client.Get(p.URL("front", "/"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := len(up.accepts); n != 1 {
		t.Errorf("upstream accepted %d connections for 20 sequential requests, want 1", n)
	}
	p.WaitStat("cluster.up.upstream_cx_total", 1)
	p.WaitStat("http.ingress.downstream_cx_total", 1)
	p.WaitStat("cluster.up.upstream_rq_total", 20)
}

func TestRequestBodiesStream(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Len", fmt.Sprint(len(b)))
		w.Header().Set("X-TE", strings.Join(r.TransferEncoding, ","))
		w.Write(b)
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	// 3 MB: over the 1 MiB buffer limit, so it only passes if it streams.
	big := strings.Repeat("0123456789", 300_000)
	for _, tc := range []struct {
		name    string
		body    io.Reader
		length  int64
		chunked bool
	}{
		{"content-length", strings.NewReader(big), int64(len(big)), false},
		{"chunked", io.MultiReader(strings.NewReader(big[:1_500_000]), strings.NewReader(big[1_500_000:])), -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", p.URL("front", "/echo"), tc.body)
			req.ContentLength = tc.length
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != big {
				t.Fatalf("status %d, echoed %d bytes, want %d", resp.StatusCode, len(b), len(big))
			}
			if tc.chunked && resp.Header.Get("X-TE") != "chunked" {
				t.Errorf("upstream saw transfer-encoding %q, want chunked", resp.Header.Get("X-TE"))
			}
		})
	}
}

func TestChunkedResponseWithTrailers(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(200)
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Sum", "3")
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	req, _ := http.NewRequest("GET", p.URL("front", "/"), nil)
	req.Header.Set("TE", "trailers")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "part0;part1;part2;" {
		t.Fatalf("body %q", b)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "3" {
		t.Errorf("trailer X-Sum = %q, want 3", got)
	}
}

func TestLocalReplies(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
	})
	dead := servertest.DeadPort(t)
	routes := fmt.Sprintf(`- match: {prefix: "/slow"}
  route: {cluster: up, timeout: 0.2s}
- match: {prefix: "/dead"}
  route: {cluster: dead}
- match: {prefix: "/redirect"}
  redirect: {host_redirect: example.com, path_redirect: /new, response_code: FOUND}
- match: {path: "/direct"}
  direct_response: {status: 418, body: {inline_string: "teapot"}}
  response_headers_to_add:
  - header: {key: x-direct, value: "%%REQ(x-in)%%"}
- match: {prefix: "/nocluster"}
  route: {cluster_header: x-cluster}`)
	yaml := httpBootstrap(up.port(), routes, "") + fmt.Sprintf(`  - name: dead
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`, dead)
	p := servertest.Start(t, yaml)
	for _, tc := range []struct {
		path, body, header, value string
		status                    int
	}{
		{path: "/slow", status: 504, body: "upstream request timeout"},
		{path: "/dead", status: 503, body: "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"},
		{path: "/redirect", status: 302, header: "Location", value: "http://example.com/new"},
		{path: "/direct", status: 418, body: "teapot", header: "X-Direct", value: "in"},
		{path: "/nocluster", status: 503},
	} {
		t.Run(tc.path, func(t *testing.T) {
			req, _ := http.NewRequest("GET", p.URL("front", tc.path), nil)
			req.Header.Set("X-In", "in")
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.HasPrefix(string(b), tc.body) {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, b, tc.status, tc.body)
			}
			if tc.header != "" && resp.Header.Get(tc.header) != tc.value {
				t.Errorf("%s = %q, want %q", tc.header, resp.Header.Get(tc.header), tc.value)
			}
		})
	}
	p.WaitStat("cluster.up.upstream_rq_timeout", 1)
	p.WaitStat("cluster.dead.upstream_cx_connect_fail", 1)
	p.WaitStat("http.ingress.downstream_rq_5xx", 3)
}

func TestNoRouteIs404(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	p := servertest.Start(t, httpBootstrap(up.port(), `- match: {prefix: "/api"}
  route: {cluster: up}`, ""))
	resp, err := http.Get(p.URL("front", "/other"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
	p.WaitStat("http.ingress.downstream_rq_4xx", 1)
	if n := len(up.accepts); n != 0 {
		t.Errorf("upstream saw %d connections for an unrouted request", n)
	}
}

// Malformed and smuggling requests get 400 and a close; the upstream never
// sees them, and other clients keep being served.
func TestMalformedRequestsRejected(t *testing.T) {
	var hits atomic.Int32
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	addr := p.Addr("front")
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"cl and te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"duplicate cl", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400},
		{"te not chunked last", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 0},
		{"nul in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"huge headers", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", 70_000) + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := rawRequest(t, addr, tc.raw)
			if tc.status != 0 && resp.StatusCode != tc.status || resp.StatusCode < 400 {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if !resp.Close {
				t.Errorf("connection not closed after a rejected request")
			}
		})
	}
	if hits.Load() != 0 {
		t.Fatalf("upstream saw %d rejected requests", hits.Load())
	}
	resp, err := http.Get(p.URL("front", "/fine"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("good request after bad ones: %v %v", resp, err)
	}
	resp.Body.Close()
	if p.Stat("http.ingress.downstream_cx_protocol_error") == 0 {
		t.Errorf("downstream_cx_protocol_error not counted")
	}
}

func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) })
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	c, err := net.Dial("tcp", p.Addr("front"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var raw strings.Builder
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&raw, "GET /r%d HTTP/1.1\r\nHost: a\r\n\r\n", i)
	}
	io.WriteString(c, raw.String())
	br := bufio.NewReader(c)
	for i := 0; i < 5; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("/r%d", i); string(b) != want {
			t.Fatalf("response %d = %q, want %q", i, b, want)
		}
	}
}

func TestExpect100Continue(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Expect") != "" {
			w.WriteHeader(500)
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	c, err := net.Dial("tcp", p.Addr("front"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("first line %q, want 100 Continue", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "hello" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
}

func TestUseRemoteAddressAppendsXFF(t *testing.T) {
	var xff atomic.Value
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { xff.Store(r.Header.Get("X-Forwarded-For")) })
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, "use_remote_address: true"))
	req, _ := http.NewRequest("GET", p.URL("front", "/"), nil)
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := xff.Load(); got != "10.0.0.1,127.0.0.1" {
		t.Errorf("x-forwarded-for = %q, want 10.0.0.1,127.0.0.1", got)
	}
}

func TestServerNameAndRequestHeaderMutation(t *testing.T) {
	var got atomic.Value
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("X-Client") + "|" + r.URL.Path)
	})
	routes := `- match: {prefix: "/old/"}
  route: {cluster: up, prefix_rewrite: "/new/"}
  request_headers_to_add:
  - header: {key: x-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}`
	p := servertest.Start(t, httpBootstrap(up.port(), routes, "server_name: outrider-test"))
	resp, err := http.Get(p.URL("front", "/old/x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Server") != "outrider-test" {
		t.Errorf("server = %q", resp.Header.Get("Server"))
	}
	if got.Load() != "127.0.0.1|/new/x" {
		t.Errorf("upstream saw %q", got.Load())
	}
}

// An upstream that answers before reading the request body (a 413 for an
// upload it refuses) has its answer proxied, and the client connection then
// closes because its request was not read to the end.
func TestEarlyUpstreamResponse(t *testing.T) {
	port := servertest.ServeTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
		c.(*net.TCPConn).CloseWrite()
		io.CopyN(io.Discard, c, 256<<10) // a lingering close, as Go's and nginx's servers do
	})
	p := servertest.Start(t, httpBootstrap(port, routeToUp, ""))
	c, err := net.Dial("tcp", p.Addr("front"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 8000000\r\n\r\n")
		chunk := make([]byte, 80000)
		for i := 0; i < 100; i++ {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || string(b) != "too big!" || !resp.Close {
		t.Fatalf("got %d %q close=%v, want the upstream's 413 and a close", resp.StatusCode, b, resp.Close)
	}
}

// With xff_num_trusted_hops, the client address is taken from
// x-forwarded-for past the trusted proxies, as Envoy does.
func TestXFFTrustedHops(t *testing.T) {
	got := make(chan http.Header, 1)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() })
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, "use_remote_address: true\nxff_num_trusted_hops: 1"))
	req, _ := http.NewRequest("GET", p.URL("front", "/"), nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.7, 198.51.100.1")
	req.Header.Set("X-Envoy-Retry-On", "5xx") // internal header from an external client: removed
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := <-got
	if h.Get("X-Envoy-External-Address") != "198.51.100.1" {
		t.Errorf("x-envoy-external-address = %q, want the trusted hop's client 198.51.100.1", h.Get("X-Envoy-External-Address"))
	}
	if h.Get("X-Forwarded-For") != "203.0.113.7, 198.51.100.1,127.0.0.1" {
		t.Errorf("x-forwarded-for = %q", h.Get("X-Forwarded-For"))
	}
	if h.Get("X-Envoy-Retry-On") != "" {
		t.Errorf("x-envoy-retry-on from an external client reached the upstream")
	}
}

func TestHeadersWithUnderscores(t *testing.T) {
	got := make(chan http.Header, 2)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() })
	for action, check := range map[string]func(p *servertest.Proxy, status int){
		"DROP_HEADER": func(p *servertest.Proxy, status int) {
			if h := <-got; status != 200 || h.Get("X_Under") != "" || h.Get("X-Fine") != "1" {
				t.Errorf("DROP_HEADER: status %d, upstream headers %v", status, h)
			}
			p.WaitStat("http.ingress.dropped_headers_with_underscores", 1)
		},
		"REJECT_REQUEST": func(p *servertest.Proxy, status int) {
			if status != 400 {
				t.Errorf("REJECT_REQUEST: status %d", status)
			}
			p.WaitStat("http.ingress.requests_rejected_with_underscores_in_headers", 1)
		},
	} {
		p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, "common_http_protocol_options: {headers_with_underscores_action: "+action+"}"))
		resp, _ := rawRequest(t, p.Addr("front"), "GET / HTTP/1.1\r\nHost: a\r\nX_Under: 1\r\nX-Fine: 1\r\n\r\n")
		check(p, resp.StatusCode)
	}
}

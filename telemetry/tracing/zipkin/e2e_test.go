package zipkin_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
	"github.com/outrider-proxy/outrider/telemetry/tracing/zipkin"
)

// collector is a Zipkin collector stand-in: it decodes the v2 JSON spans
// POSTed to /api/v2/spans and answers 202.
type collector struct {
	spans chan zipkin.Span
	hosts chan string
}

func startCollector(t *testing.T) (*collector, int) {
	c := &collector{spans: make(chan zipkin.Span, 64), hosts: make(chan string, 64)}
	port := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/spans" || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var spans []zipkin.Span
		if err := json.NewDecoder(r.Body).Decode(&spans); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		c.hosts <- strings.TrimSpace(r.Host + " " + r.Header.Get("x-api-key"))
		for _, s := range spans {
			c.spans <- s
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	return c, port
}

func (c *collector) next(t *testing.T) zipkin.Span {
	t.Helper()
	select {
	case s := <-c.spans:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no span reached the collector")
	}
	return zipkin.Span{}
}

// backend records the request headers it gets and answers with the status
// in x-want-status (200 by default).
type backend struct{ got chan http.Header }

func startBackend(t *testing.T) (*backend, int) {
	b := &backend{got: make(chan http.Header, 64)}
	port := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.got <- r.Header.Clone()
		code := 200
		fmt.Sscan(r.Header.Get("x-want-status"), &code)
		w.WriteHeader(code)
		io.WriteString(w, "hello")
	}))
	return b, port
}

func (b *backend) next(t *testing.T) http.Header {
	t.Helper()
	select {
	case h := <-b.got:
		return h
	case <-time.After(5 * time.Second):
		t.Fatal("no request reached the backend")
	}
	return nil
}

func serveHTTP(t *testing.T, h http.Handler) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

const proxyYAML = `
node: {id: node-1, cluster: front-proxy, locality: {zone: zone-a}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          tracing:
            custom_tags:
            - tag: tenant
              request_header: {name: x-tenant, default_value: none}
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /route-sampled-out}
                route: {cluster: backend}
                tracing:
                  random_sampling: {numerator: 0}
              - match: {prefix: /route-tagged}
                route: {cluster: backend}
                tracing:
                  custom_tags:
                  - tag: tenant
                    literal: {value: route-value}
              - match: {prefix: /}
                route: {cluster: backend}
                decorator: {operation: routeToBackend}
  - name: egress
    traffic_direction: OUTBOUND
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: egress_http
          tracing:
            spawn_upstream_span: true
            random_sampling: {value: 0}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: backend}
                decorator: {operation: callBackend}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
  - name: zipkin
    connect_timeout: 1s
    load_assignment:
      cluster_name: zipkin
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
tracing:
  http:
    name: envoy.tracers.zipkin
    typed_config:
      "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
      collector_endpoint_version: HTTP_JSON
      trace_id_128bit: true
      collector_service:
        http_uri: {uri: "http://zipkin.example:9411/api/v2/spans", cluster: zipkin, timeout: 1s}
        request_headers_to_add:
        - header: {key: x-api-key, value: secret}
`

func setup(t *testing.T) (*servertest.Proxy, *collector, *backend) {
	zipkin.DefaultOptions = zipkin.Options{MinFlushSpans: 1, FlushInterval: 50 * time.Millisecond}
	t.Cleanup(func() { zipkin.DefaultOptions = zipkin.Options{} })
	col, cport := startCollector(t)
	be, bport := startBackend(t)
	p := servertest.Start(t, fmt.Sprintf(proxyYAML, bport, cport))
	return p, col, be
}

func TestZipkinIngressRootSpan(t *testing.T) {
	p, col, be := setup(t)
	resp := servertest.Get(t, p.URL("ingress", "/hello?x=1"), "user-agent", "tester", "x-tenant", "t1")
	if got := resp.Header.Get("x-envoy-decorator-operation"); got != "routeToBackend" {
		t.Errorf("response x-envoy-decorator-operation = %q", got)
	}
	up := be.next(t)
	s := col.next(t)
	if s.TraceID != up.Get("x-b3-traceid") || s.ID != up.Get("x-b3-spanid") || up.Get("x-b3-sampled") != "1" {
		t.Errorf("span %s/%s, upstream got trace %q span %q sampled %q", s.TraceID, s.ID,
			up.Get("x-b3-traceid"), up.Get("x-b3-spanid"), up.Get("x-b3-sampled"))
	}
	if up.Get("x-b3-parentspanid") != "" || s.ParentID != "" {
		t.Errorf("root span has a parent: %q %q", up.Get("x-b3-parentspanid"), s.ParentID)
	}
	if len(s.TraceID) != 16 || s.TraceID != s.ID {
		t.Errorf("root trace id %q, span id %q: want the same 64-bit id", s.TraceID, s.ID)
	}
	if s.Kind != "SERVER" || s.Name != "routeToBackend" || s.LocalEndpoint == nil || s.LocalEndpoint.ServiceName != "front-proxy" ||
		(s.LocalEndpoint.IPv4 == "" && s.LocalEndpoint.IPv6 == "") {
		t.Errorf("span kind %q name %q endpoint %+v", s.Kind, s.Name, s.LocalEndpoint)
	}
	if !s.Shared { // Envoy marks server spans shared with shared_span_context (the default)
		t.Error("server span not marked shared")
	}
	rid := up.Get("x-request-id")
	if len(rid) != 36 || rid[14] != '9' {
		t.Errorf("x-request-id %q does not carry the sampled status", rid)
	}
	want := map[string]string{
		"component": "proxy", "node_id": "node-1", "zone": "zone-a", "guid:x-request-id": rid,
		"http.url": "http://" + p.Addr("ingress") + "/hello?x=1", "http.method": "GET", "http.protocol": "HTTP/1.1",
		"http.status_code": "200", "upstream_cluster": "backend", "upstream_cluster.name": "backend",
		"user_agent": "tester", "downstream_cluster": "-", "response_size": "5", "request_size": "0",
		"response_flags": "-", "peer.address": "127.0.0.1", "tenant": "t1",
	}
	for k, v := range want {
		if s.Tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, s.Tags[k], v)
		}
	}
	if _, ok := s.Tags["error"]; ok {
		t.Error("error tag on a 200")
	}
	if h := <-col.hosts; h != "zipkin" {
		t.Errorf("collector Host %q, want the cluster name", h)
	}
	p.WaitStat("tracing.zipkin.reports_sent", 1)
	p.WaitStat("tracing.zipkin.spans_sent", 1)
	p.WaitStat("http.ingress_http.tracing.random_sampling", 1)
}

func TestZipkinJoinsB3Context(t *testing.T) {
	p, col, be := setup(t)
	const trace, span = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"

	// Unsampled by the client: propagated with sampled 0, not reported.
	servertest.Get(t, p.URL("ingress", "/"), "x-b3-traceid", trace, "x-b3-spanid", span, "x-b3-sampled", "0")
	up := be.next(t)
	if up.Get("x-b3-sampled") != "0" || up.Get("x-b3-traceid") != trace {
		t.Errorf("unsampled: upstream sampled %q trace %q", up.Get("x-b3-sampled"), up.Get("x-b3-traceid"))
	}

	// Shared span context: the server span takes the client's span id.
	servertest.Get(t, p.URL("ingress", "/"), "x-b3-traceid", trace, "x-b3-spanid", span, "x-b3-parentspanid", "0000000000000001", "x-b3-sampled", "1", "x-want-status", "503")
	up = be.next(t)
	s := col.next(t) // the first reported span: the unsampled one was not
	if s.TraceID != trace || s.ID != span || s.ParentID != "0000000000000001" || !s.Shared {
		t.Errorf("shared span: trace %s id %s parent %s shared %v", s.TraceID, s.ID, s.ParentID, s.Shared)
	}
	if up.Get("x-b3-spanid") != span || up.Get("x-b3-traceid") != trace {
		t.Errorf("upstream got span %q", up.Get("x-b3-spanid"))
	}
	if s.Tags["error"] != "true" || s.Tags["http.status_code"] != "503" {
		t.Errorf("5xx tags: error %q status %q", s.Tags["error"], s.Tags["http.status_code"])
	}

	// The single b3 header.
	servertest.Get(t, p.URL("ingress", "/"), "b3", trace+"-"+span+"-1")
	be.next(t)
	if s := col.next(t); s.TraceID != trace || s.ID != span {
		t.Errorf("b3 header: trace %s id %s", s.TraceID, s.ID)
	}
}

func TestZipkinEgressChildSpan(t *testing.T) {
	p, col, be := setup(t)
	// random_sampling 0: only the forced request is sampled.
	servertest.Get(t, p.URL("egress", "/x"))
	up := be.next(t)
	if up.Get("x-b3-sampled") != "0" {
		t.Errorf("random_sampling 0: sampled %q", up.Get("x-b3-sampled"))
	}
	resp := servertest.Get(t, p.URL("egress", "/x"), "x-envoy-force-trace", "true")
	up = be.next(t)
	if resp.Header.Get("x-envoy-decorator-operation") != "" {
		t.Error("egress answered x-envoy-decorator-operation")
	}
	if up.Get("x-envoy-decorator-operation") != "callBackend" {
		t.Errorf("egress request x-envoy-decorator-operation = %q", up.Get("x-envoy-decorator-operation"))
	}
	rid := up.Get("x-request-id")
	if rid[14] != 'a' {
		t.Errorf("forced x-request-id %q", rid)
	}
	byName := map[string]zipkin.Span{}
	for range 2 {
		s := col.next(t)
		byName[s.Name] = s
	}
	down, child := byName["callBackend"], byName["router backend egress"]
	if down.ID == "" || child.ID == "" {
		t.Fatalf("spans reported: %+v", byName)
	}
	// spawn_upstream_span: the downstream span is this hop's server span.
	if down.Kind != "SERVER" || child.Kind != "CLIENT" || !down.Shared || child.Shared {
		t.Errorf("kinds %q %q shared %v %v, want SERVER (shared) and CLIENT", down.Kind, child.Kind, down.Shared, child.Shared)
	}
	if len(down.TraceID) != 32 || child.TraceID != down.TraceID || child.ParentID != down.ID || down.ParentID != "" {
		t.Errorf("downstream %s/%s/%s child %s/%s/%s", down.TraceID, down.ID, down.ParentID, child.TraceID, child.ID, child.ParentID)
	}
	if up.Get("x-b3-spanid") != child.ID || up.Get("x-b3-parentspanid") != down.ID || up.Get("x-b3-traceid") != down.TraceID {
		t.Errorf("upstream context %q/%q/%q", up.Get("x-b3-traceid"), up.Get("x-b3-spanid"), up.Get("x-b3-parentspanid"))
	}
	if !strings.HasPrefix(child.Tags["upstream_address"], "127.0.0.1:") || child.Tags["peer.address"] != child.Tags["upstream_address"] {
		t.Errorf("child upstream_address %q", child.Tags["upstream_address"])
	}
	if child.Tags["component"] != "proxy" || child.Tags["http.status_code"] != "200" {
		t.Errorf("child tags %v", child.Tags)
	}
	if h := <-col.hosts; h != "zipkin.example:9411 secret" {
		t.Errorf("collector_service: collector got Host and x-api-key %q", h)
	}
	p.WaitStat("http.egress_http.tracing.not_traceable", 1)
	p.WaitStat("http.egress_http.tracing.service_forced", 1)
}

func TestZipkinRouteTracingOverrides(t *testing.T) {
	p, col, be := setup(t)
	servertest.Get(t, p.URL("ingress", "/route-sampled-out"))
	if up := be.next(t); up.Get("x-b3-sampled") != "0" || up.Get("x-request-id")[14] != '4' {
		t.Errorf("route random_sampling 0: sampled %q request id %q", up.Get("x-b3-sampled"), up.Get("x-request-id"))
	}
	servertest.Get(t, p.URL("ingress", "/route-tagged"), "x-tenant", "from-header")
	be.next(t)
	s := col.next(t)                                                      // the sampled-out request reported nothing
	if s.Tags["tenant"] != "route-value" || s.Name != p.Addr("ingress") { // Zipkin names undecorated spans after the host
		t.Errorf("route custom tag %q (the route's wins over the connection manager's), name %q", s.Tags["tenant"], s.Name)
	}
	p.WaitStat("http.ingress_http.tracing.not_traceable", 1)
}

func TestZipkinHTTP2Downstream(t *testing.T) {
	p, col, be := setup(t)
	h2 := &http.Client{Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	defer h2.CloseIdleConnections()
	for i := range 3 { // pooled HTTP/2 streams keep no trace state between requests
		resp, err := h2.Get(p.URL("ingress", fmt.Sprintf("/h2/%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		up := be.next(t)
		s := col.next(t)
		if s.Tags["http.protocol"] != "HTTP/2" || s.ID != up.Get("x-b3-spanid") || s.ParentID != "" ||
			s.Tags["http.url"] != fmt.Sprintf("http://%s/h2/%d", p.Addr("ingress"), i) {
			t.Errorf("request %d: span %s (parent %q) protocol %q url %q, upstream span %q", i, s.ID, s.ParentID,
				s.Tags["http.protocol"], s.Tags["http.url"], up.Get("x-b3-spanid"))
		}
	}
}

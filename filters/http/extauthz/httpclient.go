package extauthz

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
	"github.com/outrider-proxy/outrider/telemetry/tracing"
)

// headersToRemoveHeader lists, in an OK answer of an HTTP service, request
// headers to remove before the request goes upstream.
const headersToRemoveHeader = "x-envoy-auth-headers-to-remove"

// maxAuthBody bounds how much of a denial's body is read.
const maxAuthBody = 1 << 20

// httpClient is Envoy's RawHttpClientImpl: the checked request's method,
// allowed headers and (with_request_body) body go to the http_service
// cluster, path_prefix before the path; 200 allows, 5xx or no answer is an
// error, anything else denies with that status, body and headers.
type httpClient struct {
	hc         *http.Client
	cluster    string
	tmo        time.Duration
	pathPrefix string
	headersAdd []headerToAdd
	// upstream (set) and upstreamAppend (added) go to the request on OK;
	// clientOnSuccess goes to the response on OK; denial goes to the
	// client with a denial (nil: every header).
	upstream, upstreamAppend, clientOnSuccess, denial headerMatcher
}

// headerToAdd is one authorization_request.headers_to_add.
type headerToAdd struct {
	name  string
	value *formatter.Formatter
}

func newHTTPClient(m *upstream.Manager, hs *extauthzv3.HttpService) (*httpClient, error) {
	if err := confcheck.Fields(hs, "", "server_uri", "path_prefix", "authorization_request",
		"authorization_response"); err != nil {
		return nil, err
	}
	u := hs.GetServerUri()
	if u == nil {
		return nil, errors.New("server_uri: required")
	}
	if err := confcheck.Fields(u, "server_uri", "uri", "cluster", "timeout"); err != nil {
		return nil, err
	}
	if u.GetTimeout() == nil {
		return nil, errors.New("server_uri.timeout: required")
	}
	name := u.GetCluster()
	if m.Get(name) == nil {
		return nil, fmt.Errorf("server_uri.cluster: unknown cluster %q", name)
	}
	c := &httpClient{cluster: name, tmo: u.GetTimeout().AsDuration(), pathPrefix: hs.GetPathPrefix()}
	if c.pathPrefix != "" && !strings.HasPrefix(c.pathPrefix, "/") {
		return nil, errors.New("path_prefix: must start with /")
	}
	if ar := hs.GetAuthorizationRequest(); ar != nil {
		if err := confcheck.Fields(ar, "authorization_request", "allowed_headers", "headers_to_add"); err != nil {
			return nil, err
		}
		for i, h := range ar.GetHeadersToAdd() {
			if h.GetKey() == "" {
				return nil, fmt.Errorf("authorization_request.headers_to_add[%d].key: required", i)
			}
			f, err := formatter.CompileHeader(headerValue(h))
			if err != nil {
				return nil, fmt.Errorf("authorization_request.headers_to_add[%d].value: %w", i, err)
			}
			c.headersAdd = append(c.headersAdd, headerToAdd{name: strings.ToLower(h.GetKey()), value: f})
		}
	}
	ar := hs.GetAuthorizationResponse()
	if err := confcheck.Fields(ar, "authorization_response", "allowed_upstream_headers",
		"allowed_upstream_headers_to_append", "allowed_client_headers", "allowed_client_headers_on_success"); ar != nil && err != nil {
		return nil, err
	}
	var err error
	if c.upstream, err = compileList(ar.GetAllowedUpstreamHeaders(), "authorization_response.allowed_upstream_headers"); err != nil {
		return nil, err
	}
	if c.upstreamAppend, err = compileList(ar.GetAllowedUpstreamHeadersToAppend(),
		"authorization_response.allowed_upstream_headers_to_append"); err != nil {
		return nil, err
	}
	if c.clientOnSuccess, err = compileList(ar.GetAllowedClientHeadersOnSuccess(),
		"authorization_response.allowed_client_headers_on_success"); err != nil {
		return nil, err
	}
	if len(ar.GetAllowedClientHeaders().GetPatterns()) > 0 {
		if c.denial, err = compileList(ar.GetAllowedClientHeaders(), "authorization_response.allowed_client_headers"); err != nil {
			return nil, err
		}
		c.denial = append(c.denial, exactMatchers(":status", "content-length", "www-authenticate", "location")...)
	}
	// Connections go through the cluster's load balancer and transport
	// socket (HTTP/2 with prior knowledge when the cluster is HTTP/2);
	// redirects are answers, not followed; no compression is asked.
	c.hc = tracing.ClusterHTTPClient(m, name, c.tmo)
	if t, ok := c.hc.Transport.(*http.Transport); ok {
		t.DisableCompression = true
		t.MaxIdleConnsPerHost = 64
	}
	if m.Get(name).Protocol() == upstream.ProtocolHTTP2 {
		c.hc.Transport = &http2.Transport{AllowHTTP: true, DisableCompression: true,
			DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
				return m.DialCluster(ctx, name)
			}}
	}
	c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	// Idle connections close when an update replaced the filter config.
	runtime.AddCleanup(c, func(t http.RoundTripper) {
		if ci, ok := t.(interface{ CloseIdleConnections() }); ok {
			ci.CloseIdleConnections()
		}
	}, c.hc.Transport)
	return c, nil
}

func (c *httpClient) timeout() time.Duration { return c.tmo }

// hopByHop are response headers a denial does not copy: the connection's
// own, and the length the local reply sets itself.
var hopByHop = []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
	"trailer", "content-length"}

func (c *httpClient) check(ctx context.Context, req *authv3.CheckRequest, fctx *formatter.Context) *response {
	hr := req.GetAttributes().GetRequest().GetHttp()
	body := hr.GetRawBody()
	if body == nil && hr.GetBody() != "" {
		body = []byte(hr.GetBody())
	}
	method, path, host := "GET", "/", ""
	out := http.Header{}
	for k, v := range hr.GetHeaders() {
		switch k {
		case ":method":
			method = v
		case ":path":
			path = c.pathPrefix + v
		case ":authority":
			host = v
		case "content-length":
		default:
			if !strings.HasPrefix(k, ":") {
				out.Add(k, v)
			}
		}
	}
	for _, h := range c.headersAdd {
		out.Set(h.name, h.value.Format(fctx))
	}
	if _, ok := out["User-Agent"]; !ok {
		out["User-Agent"] = []string{""} // none, rather than Go's
	}
	u := &url.URL{Scheme: "http", Host: c.cluster, Opaque: path}
	if strings.HasPrefix(path, "//") || !strings.HasPrefix(path, "/") {
		u.Opaque, u.Path = "", path
	}
	hreq, err := http.NewRequestWithContext(ctx, method, "http://placeholder/", bytes.NewReader(body))
	if err != nil {
		return errorResponse
	}
	hreq.URL, hreq.Host, hreq.Header = u, host, out
	hreq.ContentLength = int64(len(body))
	if len(body) == 0 {
		hreq.Body, hreq.GetBody = http.NoBody, nil
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		return errorResponse
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 && resp.StatusCode < 600 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAuthBody))
		return errorResponse
	}
	names := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		names = append(names, k)
	}
	slices.Sort(names)
	r := &response{statusCode: resp.StatusCode}
	if resp.StatusCode == http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAuthBody))
		for _, v := range resp.Header.Values(headersToRemoveHeader) {
			for n := range strings.SplitSeq(v, ",") {
				if n = strings.TrimSpace(n); n != "" {
					r.headersToRemove = append(r.headersToRemove, strings.ToLower(n))
				}
			}
		}
		for _, k := range names {
			name := strings.ToLower(k)
			if name == headersToRemoveHeader {
				continue
			}
			for _, v := range resp.Header[k] {
				e := kv{name, v}
				if c.upstream.matches(name) {
					r.headersToSet = append(r.headersToSet, e)
				}
				if c.upstreamAppend.matches(name) {
					r.headersToAdd = append(r.headersToAdd, e)
				}
				if c.clientOnSuccess.matches(name) {
					r.respAdd = append(r.respAdd, e)
				}
			}
		}
		return r
	}
	r.status = statusDenied
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAuthBody))
	if err != nil {
		return errorResponse
	}
	r.body = string(b)
	for _, k := range names {
		name := strings.ToLower(k)
		if name == headersToRemoveHeader || slices.Contains(hopByHop, name) {
			continue
		}
		if c.denial != nil && !c.denial.matches(name) {
			continue
		}
		for _, v := range resp.Header[k] {
			r.headersToSet = append(r.headersToSet, kv{name, v})
		}
	}
	return r
}

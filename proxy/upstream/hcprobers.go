package upstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	datacorev3 "github.com/envoyproxy/go-control-plane/envoy/data/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

var (
	hcOK      = hcResult{ok: true}
	hcNetwork = hcResult{failure: datacorev3.HealthCheckFailureType_NETWORK}
	hcActive  = hcResult{failure: datacorev3.HealthCheckFailureType_ACTIVE}
)

// setDeadline bounds c by ctx: its deadline, and its cancellation. Call stop
// before ctx is cancelled once the check is over.
func setDeadline(ctx context.Context, c net.Conn) (stop func() bool) {
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	// A check in flight ends when its session does (the host is removed
	// or the cluster drains), not at its timeout.
	return context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
}

// hostHeader is the authority of a check: health_check_config.hostname, then
// the configured host, then the cluster name (Envoy's getHostname).
func hostHeader(s *hcSession, configured string) string {
	switch {
	case s.host.hcHost() != "":
		return s.host.hcHost()
	case configured != "":
		return configured
	}
	return s.hc.c.Name
}

// httpProber is the HTTP/1.1 health checker.
type httpProber struct {
	path, host, method  string
	headers             [][2]string // request_headers_to_add
	remove              []string    // request_headers_to_remove
	expected, retriable [][2]int64  // [start, end) status ranges
	reuse               bool
}

func statusRanges(field string, rs []*typev3.Int64Range) ([][2]int64, error) {
	var out [][2]int64
	for _, r := range rs {
		s, e := r.GetStart(), r.GetEnd()
		switch {
		case s >= e:
			return nil, fmt.Errorf("%s: Invalid http status range: expecting start < end, but found start=%d and end=%d", field, s, e)
		case s < 100:
			return nil, fmt.Errorf("%s: Invalid http status range: expecting start >= 100, but found start=%d", field, s)
		case e > 600:
			return nil, fmt.Errorf("%s: Invalid http status range: expecting end <= 600, but found end=%d", field, e)
		}
		out = append(out, [2]int64{s, e})
	}
	return out, nil
}

func inRanges(code int, rs [][2]int64) bool {
	for _, r := range rs {
		if int64(code) >= r[0] && int64(code) < r[1] {
			return true
		}
	}
	return false
}

func newHTTPProber(c *Cluster, h *corev3.HealthCheck_HttpHealthCheck, reuse bool) (*httpProber, error) {
	switch {
	case h.GetCodecClientType() != typev3.CodecClientType_HTTP1:
		return nil, fmt.Errorf("codec_client_type: %s is not supported yet", h.GetCodecClientType())
	case h.GetSend() != nil || len(h.GetReceive()) > 0:
		return nil, fmt.Errorf("send/receive: not supported yet")
	case h.GetServiceNameMatcher() != nil:
		return nil, fmt.Errorf("service_name_matcher: not supported yet")
	case h.GetMethod() == corev3.RequestMethod_CONNECT:
		return nil, fmt.Errorf("method: CONNECT is not allowed")
	}
	p := &httpProber{path: h.GetPath(), host: h.GetHost(), method: "GET", reuse: reuse,
		remove: h.GetRequestHeadersToRemove()}
	if m := h.GetMethod(); m != corev3.RequestMethod_METHOD_UNSPECIFIED {
		p.method = m.String()
	}
	var err error
	if p.expected, err = statusRanges("expected_statuses", h.GetExpectedStatuses()); err != nil {
		return nil, err
	}
	if len(p.expected) == 0 {
		p.expected = [][2]int64{{200, 201}}
	}
	if p.retriable, err = statusRanges("retriable_statuses", h.GetRetriableStatuses()); err != nil {
		return nil, err
	}
	for i, hv := range h.GetRequestHeadersToAdd() {
		k := strings.ToLower(hv.GetHeader().GetKey())
		if k == "" || strings.HasPrefix(k, ":") || k == "host" {
			return nil, fmt.Errorf("request_headers_to_add[%d]: header %q cannot be set", i, k)
		}
		p.headers = append(p.headers, [2]string{k, hv.GetHeader().GetValue()})
	}
	_ = c
	return p, nil
}

func (p *httpProber) kind() datacorev3.HealthCheckerType { return datacorev3.HealthCheckerType_HTTP }

func (p *httpProber) closeSession(s *hcSession) {
	if s.conn != nil {
		s.conn.Close()
		s.conn, s.state = nil, nil
	}
}

func (p *httpProber) request(s *hcSession) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nhost: %s\r\n", p.method, p.path, hostHeader(s, p.host))
	hdrs := append([][2]string{{"user-agent", "Envoy/HC"}}, p.headers...)
	for _, h := range hdrs {
		removed := false
		for _, r := range p.remove {
			removed = removed || strings.EqualFold(r, h[0])
		}
		if !removed {
			b.WriteString(h[0] + ": " + h[1] + "\r\n")
		}
	}
	if !p.reuse {
		b.WriteString("connection: close\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

func (p *httpProber) probe(ctx context.Context, s *hcSession) hcResult {
	for attempt := 0; attempt < 2; attempt++ {
		fresh := s.conn == nil
		if fresh {
			c, err := s.hc.dialCheck(ctx, s.host)
			if err != nil {
				return hcNetwork
			}
			s.conn, s.state = c, bufio.NewReader(c)
		}
		defer setDeadline(ctx, s.conn)()
		br := s.state.(*bufio.Reader)
		_, err := s.conn.Write(p.request(s))
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(br, nil)
		}
		if err != nil {
			p.closeSession(s)
			if !fresh && ctx.Err() == nil && errors.Is(err, io.EOF) {
				continue // the kept-alive connection was closed meanwhile
			}
			return hcNetwork
		}
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil || resp.Close || !p.reuse {
			p.closeSession(s)
		} else {
			s.conn.SetDeadline(time.Time{})
		}
		switch code := resp.StatusCode; {
		case inRanges(code, p.expected):
			return hcResult{ok: true, degraded: resp.Header.Get("x-envoy-degraded") != "" || resp.Header.Values("x-envoy-degraded") != nil}
		case inRanges(code, p.retriable):
			return hcResult{failure: datacorev3.HealthCheckFailureType_ACTIVE, retriable: true, code: code}
		default:
			return hcResult{failure: datacorev3.HealthCheckFailureType_ACTIVE, code: code}
		}
	}
	return hcNetwork
}

// tcpProber is the L3/L4 health checker: connect, send, expect the receive
// payloads in order.
type tcpProber struct {
	send    []byte
	receive [][]byte
	reuse   bool
}

func payload(field string, p *corev3.HealthCheck_Payload) ([]byte, error) {
	if b := p.GetBinary(); b != nil {
		return b, nil
	}
	b, err := hex.DecodeString(p.GetText())
	if err != nil {
		return nil, fmt.Errorf("%s.text: invalid hex string %q", field, p.GetText())
	}
	return b, nil
}

func newTCPProber(t *corev3.HealthCheck_TcpHealthCheck, reuse bool) (*tcpProber, error) {
	p := &tcpProber{reuse: reuse}
	if t.GetSend() != nil {
		b, err := payload("send", t.GetSend())
		if err != nil {
			return nil, err
		}
		p.send = b
	}
	for i, r := range t.GetReceive() {
		b, err := payload(fmt.Sprintf("receive[%d]", i), r)
		if err != nil {
			return nil, err
		}
		p.receive = append(p.receive, b)
	}
	if t.GetProxyProtocolConfig() != nil {
		return nil, fmt.Errorf("proxy_protocol_config: not supported yet")
	}
	return p, nil
}

func (p *tcpProber) kind() datacorev3.HealthCheckerType { return datacorev3.HealthCheckerType_TCP }

func (p *tcpProber) closeSession(s *hcSession) {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// matches reports whether buf holds every receive payload in order.
func (p *tcpProber) matches(buf []byte) bool {
	for _, r := range p.receive {
		i := bytes.Index(buf, r)
		if i < 0 {
			return false
		}
		buf = buf[i+len(r):]
	}
	return true
}

func (p *tcpProber) probe(ctx context.Context, s *hcSession) hcResult {
	connectOnly := len(p.send) == 0 && len(p.receive) == 0
	for attempt := 0; attempt < 2; attempt++ {
		fresh := s.conn == nil || connectOnly
		if fresh {
			p.closeSession(s)
			c, err := s.hc.dialCheck(ctx, s.host)
			if err != nil {
				return hcNetwork
			}
			s.conn = c
		}
		defer setDeadline(ctx, s.conn)()
		if len(p.send) > 0 {
			if _, err := s.conn.Write(p.send); err != nil {
				p.closeSession(s)
				return hcNetwork
			}
		}
		var buf []byte
		var rerr error
		var chunk [512]byte
		for len(p.receive) > 0 && !p.matches(buf) && rerr == nil && len(buf) < 1<<20 {
			var n int
			n, rerr = s.conn.Read(chunk[:])
			buf = append(buf, chunk[:n]...)
		}
		if rerr != nil && !p.matches(buf) {
			p.closeSession(s)
			if !fresh && len(buf) == 0 && ctx.Err() == nil && errors.Is(rerr, io.EOF) {
				continue // the kept connection was closed meanwhile
			}
			return hcNetwork
		}
		if !p.reuse || connectOnly {
			p.closeSession(s)
		} else {
			s.conn.SetDeadline(time.Time{})
		}
		return hcOK
	}
	return hcNetwork
}

// grpcProber is the grpc.health.v1 health checker over HTTP/2 (h2c).
type grpcProber struct {
	service, authority string
}

func newGRPCProber(_ *Cluster, g *corev3.HealthCheck_GrpcHealthCheck) *grpcProber {
	return &grpcProber{service: g.GetServiceName(), authority: g.GetAuthority()}
}

func (p *grpcProber) kind() datacorev3.HealthCheckerType { return datacorev3.HealthCheckerType_GRPC }

func (p *grpcProber) closeSession(s *hcSession) {
	if cc, ok := s.state.(*grpc.ClientConn); ok {
		cc.Close()
		s.state = nil
	}
}

func (p *grpcProber) probe(ctx context.Context, s *hcSession) hcResult {
	cc, _ := s.state.(*grpc.ClientConn)
	if cc == nil {
		h := s.hc
		var err error
		cc, err = grpc.NewClient("passthrough:///"+checkAddr(s.host),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority(hostHeader(s, p.authority)),
			grpc.WithUserAgent("Envoy/HC"),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				return h.dialCheck(ctx, s.host)
			}))
		if err != nil {
			return hcNetwork
		}
		s.state = cc
	}
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: p.service}, grpc.WaitForReady(false))
	if err != nil {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			return hcNetwork
		}
		return hcActive
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return hcActive
	}
	return hcOK
}

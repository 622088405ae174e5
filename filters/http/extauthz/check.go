package extauthz

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// checker is an authorization service client.
type checker interface {
	// check asks the service; it never returns nil. fctx renders the HTTP
	// service's headers_to_add.
	check(ctx context.Context, req *authv3.CheckRequest, fctx *formatter.Context) *response
	// timeout bounds one check.
	timeout() time.Duration
}

// checkStatus is Envoy's CheckStatus.
type checkStatus uint8

const (
	statusOK checkStatus = iota
	statusDenied
	statusError
)

// kv is one header (or query parameter) of a response.
type kv struct{ k, v string }

// response is Envoy's ExtAuthz::Response: the decision and what it changes.
type response struct {
	status checkStatus
	// statusCode and body are the denial's answer to the client.
	statusCode int
	body       string
	// Request mutations (OK): set, added (another field), appended to an
	// existing value with ",", removed.
	headersToSet, headersToAdd, headersToAppend []kv
	headersToRemove                             []string
	querySet                                    []kv
	queryRemove                                 []string
	// Response mutations (OK).
	respAdd, respSet, respAddIfAbsent, respOverwriteIfExists []kv
}

var errorResponse = &response{status: statusError, statusCode: 403}

// partialBodyHeader tells the service whether the body it got is cut short.
const partialBodyHeader = "x-envoy-auth-partial-body"

// failureModeHeader is added upstream when failure_mode_allow let a request
// through and failure_mode_allow_header_add is set.
const failureModeHeader = "x-envoy-auth-failure-mode-allowed"

// checkInput is what one check request is made of.
type checkInput struct {
	info    *streaminfo.Stream
	headers *headers.Map
	body    []byte // nil: not sent
	partial bool   // body is the first max_request_bytes of a longer one
	raw     bool   // pack_as_bytes: body goes in raw_body
	ext     map[string]string
}

// buildCheck is Envoy's CheckRequestUtils::createHttpCheck.
func (c *config) buildCheck(in *checkInput) *authv3.CheckRequest {
	conn := in.info.Conn
	if conn == nil {
		conn = &streaminfo.Conn{}
	}
	h := in.headers
	service, _ := h.Get("x-envoy-downstream-service-cluster")
	src := &authv3.AttributeContext_Peer{Address: socketAddress(conn.RemoteAddr), Service: sanitize(service)}
	dst := &authv3.AttributeContext_Peer{Address: socketAddress(conn.LocalAddr)}
	if t := conn.TLS; t != nil {
		src.Principal = principal(t.PeerURISANs, t.PeerDNSSANs, t.PeerSubject)
		dst.Principal = principal(t.LocalURISANs, t.LocalDNSSANs, t.LocalSubject)
		if c.includePeerCert && len(t.PeerCertificates) > 0 {
			src.Certificate = string(streaminfo.AppendURLEncodedPEM(nil, t.PeerCertificates[:1]))
		}
	}
	httpReq := &authv3.AttributeContext_HttpRequest{
		Id:       strconv.FormatUint(rand.Uint64(), 10),
		Method:   sanitize(h.GetString(headers.Method)),
		Path:     sanitize(h.GetString(headers.Path)),
		Host:     sanitize(h.GetString(headers.Authority)),
		Scheme:   sanitize(h.GetString(headers.Scheme)),
		Size:     int64(in.info.BytesReceived),
		Protocol: in.info.Protocol,
		Headers:  make(map[string]string, h.Len()),
	}
	for _, f := range h.Fields() {
		name := string(f.Name)
		if name == partialBodyHeader || (c.disallowed != nil && c.disallowed.matches(name)) ||
			(c.allowed != nil && !c.allowed.matches(name)) {
			continue
		}
		v := sanitize(f.Value)
		if old, ok := httpReq.Headers[name]; ok {
			v = old + "," + v
		}
		httpReq.Headers[name] = v
	}
	if in.body != nil {
		if in.raw {
			httpReq.RawBody = in.body
		} else {
			httpReq.Body = sanitize(in.body)
		}
		httpReq.Headers[partialBodyHeader] = strconv.FormatBool(in.partial)
	}
	attrs := &authv3.AttributeContext{
		Source:      src,
		Destination: dst,
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(in.info.StartTime),
			Http: httpReq,
		},
		ContextExtensions: in.ext,
	}
	if c.includeTLSSession {
		sni := conn.RequestedServerName
		if conn.TLS != nil && conn.TLS.ServerName != "" {
			sni = conn.TLS.ServerName
		}
		if sni != "" {
			attrs.TlsSession = &authv3.AttributeContext_TLSSession{Sni: sni}
		}
	}
	return &authv3.CheckRequest{Attributes: attrs}
}

func socketAddress(ap netip.AddrPort) *corev3.Address {
	if !ap.IsValid() {
		return nil
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ap.Addr().Unmap().String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
	}}}
}

// principal is the first URI SAN, else the first DNS SAN, else the subject.
func principal(uris, dns []string, subject string) string {
	switch {
	case len(uris) > 0:
		return sanitize(uris[0])
	case len(dns) > 0:
		return sanitize(dns[0])
	}
	return sanitize(subject)
}

// sanitize is Envoy's MessageUtil::sanitizeUtf8String: every byte that is
// not part of valid UTF-8 becomes '!' (proto strings must be UTF-8).
func sanitize[T string | []byte](s T) string {
	if utf8.ValidString(string(s)) {
		return string(s)
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(string(s[i:]))
		if r == utf8.RuneError && n <= 1 {
			out = append(out, '!')
			i++
			continue
		}
		out = append(out, s[i:i+n]...)
		i += n
	}
	return string(out)
}

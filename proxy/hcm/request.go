package hcm

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/http1"
)

// envoyInternalHeaders are removed from requests that come from outside, as
// Envoy removes them, so a client cannot steer the proxy with them.
var envoyInternalHeaders = [...]string{
	"x-envoy-decorator-operation", "x-envoy-downstream-service-cluster", "x-envoy-downstream-service-node",
	"x-envoy-expected-rq-timeout-ms", "x-envoy-force-trace", "x-envoy-hedge-on-per-try-timeout",
	"x-envoy-internal", "x-envoy-ip-tags", "x-envoy-max-retries", "x-envoy-retriable-header-names",
	"x-envoy-retriable-status-codes", "x-envoy-retry-grpc-on", "x-envoy-retry-on", "x-envoy-upstream-alt-stat-name",
	"x-envoy-upstream-rq-per-try-timeout-ms", "x-envoy-upstream-rq-timeout-alt-response",
	"x-envoy-upstream-rq-timeout-ms", "x-envoy-external-address",
}

// requestError is a request the connection manager refuses before routing.
type requestError struct {
	status  int
	details string
}

// prepareRequest applies the connection manager's request mutations, in
// Envoy's order: protocol checks, hop-by-hop removal, path normalization,
// host port stripping, forwarding headers and the request id.
func (s *stream) prepareRequest() *requestError {
	h := &s.req
	if s.msg.Major == 1 && s.msg.Minor == 0 && !s.cfg.accept10 {
		return &requestError{426, "low_version"}
	}
	if !h.Has(headers.Authority) {
		return &requestError{400, "missing_host_header"}
	}
	if s.cfg.underscores != corev3.HttpProtocolOptions_ALLOW && s.underscoreHeaders(h) {
		return &requestError{400, "unexpected_underscore"}
	}
	upgrade, rerr := s.checkUpgrade(h)
	if rerr != nil {
		return rerr
	}
	http1.StripHopByHop(h, upgrade)
	h.Del("http2-settings")

	if path, ok := h.Get(headers.Path); ok && (s.cfg.normalizePath || s.cfg.mergeSlashes) {
		norm, ok := normalizePath(path, s.cfg.normalizePath, s.cfg.mergeSlashes)
		if !ok {
			return &requestError{400, "path_normalization_failed"}
		}
		if len(norm) != len(path) || string(norm) != string(path) {
			h.SetBytes(headers.Path, norm)
		}
	}
	if s.cfg.stripAnyHostPort || s.cfg.stripMatchingPort {
		s.stripHostPort(h)
	}
	scheme := "http"
	if s.info.Conn.TLS != nil {
		scheme = "https"
	}
	if !h.Has(headers.Scheme) {
		h.Set(headers.Scheme, scheme)
	}

	// The trusted client address, as Envoy finds it: with use_remote_address,
	// the peer itself unless xff_num_trusted_hops trusts proxies before it;
	// without, the XFF entry past the trusted hops.
	remote := s.info.Conn.RemoteAddr.Addr()
	trusted := remote
	if s.cfg.useRemoteAddress {
		if n := s.cfg.xffTrustedHops; n > 0 {
			if a, ok := xffAddr(h, n-1); ok {
				trusted = a
			}
		}
	} else if a, ok := xffAddr(h, s.cfg.xffTrustedHops); ok {
		trusted = a
	}
	internal := s.cfg.isInternal(trusted)
	if s.cfg.useRemoteAddress {
		if !s.cfg.skipXffAppend {
			appendXFF(h, remote)
		}
		h.Set("x-forwarded-proto", scheme)
		if !internal {
			for _, n := range envoyInternalHeaders {
				h.Del(n)
			}
			var b [64]byte
			h.SetBytes("x-envoy-external-address", trusted.Unmap().AppendTo(b[:0]))
		} else {
			h.Set("x-envoy-internal", "true")
		}
	} else if !h.Has("x-forwarded-proto") {
		h.Set("x-forwarded-proto", scheme)
	}
	if s.cfg.addUserAgent {
		// Envoy's add_user_agent: the local service cluster and node name.
		h.Set("x-envoy-downstream-service-cluster", s.cfg.userAgent)
		if ua, _ := h.Get("user-agent"); len(ua) == 0 {
			h.Set("user-agent", s.cfg.userAgent)
		}
		if s.cfg.nodeName != "" {
			h.Set("x-envoy-downstream-service-node", s.cfg.nodeName)
		}
	}
	if s.cfg.generateRequestID {
		regenerate := !h.Has("x-request-id") || (s.cfg.useRemoteAddress && !internal && !s.cfg.preserveExternalID)
		if regenerate {
			var id [36]byte
			newUUID(&id)
			h.SetBytes("x-request-id", id[:])
		}
	}
	s.mutateXFCC(h)
	return nil
}

// underscoreHeaders applies headers_with_underscores_action and reports
// whether the request must be rejected.
func (s *stream) underscoreHeaders(h *headers.Map) bool {
	reject := false
	h.DelFunc(func(f headers.Field) bool {
		if f.Name[0] == ':' || bytes.IndexByte(f.Name, '_') < 0 {
			return false
		}
		if s.cfg.underscores == corev3.HttpProtocolOptions_REJECT_REQUEST {
			reject = true
			return false
		}
		s.cfg.stats.droppedUnderscores.Inc()
		return true
	})
	if reject {
		s.cfg.stats.rejectedUnderscores.Inc()
	}
	return reject
}

// isInternal reports whether addr is in internal_address_config.
func (c *Config) isInternal(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range c.internalCIDRs {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// xffAddr is the address skip entries from the right of x-forwarded-for.
func xffAddr(h *headers.Map, skip int) (netip.Addr, bool) {
	v, ok := h.Get("x-forwarded-for")
	if !ok {
		return netip.Addr{}, false
	}
	end := len(v)
	for i := len(v) - 1; i >= -1; i-- {
		if i >= 0 && v[i] != ',' {
			continue
		}
		if skip == 0 {
			a, err := netip.ParseAddr(string(bytes.TrimSpace(v[i+1 : end])))
			return a, err == nil
		}
		skip--
		end = i
	}
	return netip.Addr{}, false
}

func appendXFF(h *headers.Map, remote netip.Addr) {
	var b [128]byte
	out := b[:0]
	if v, ok := h.Get("x-forwarded-for"); ok && len(v) > 0 {
		out = append(out, v...)
		out = append(out, ',')
	}
	out = remote.Unmap().AppendTo(out)
	h.SetBytes("x-forwarded-for", out)
}

func (s *stream) stripHostPort(h *headers.Map) {
	host, _ := h.Get(headers.Authority)
	i := len(host) - 1
	for i >= 0 && host[i] >= '0' && host[i] <= '9' {
		i--
	}
	if i < 0 || i == len(host)-1 || host[i] != ':' || (len(host) > 0 && host[0] == '[' && host[i-1] != ']') {
		return
	}
	if s.cfg.stripMatchingPort {
		var b [8]byte
		if string(host[i+1:]) != string(strconv.AppendUint(b[:0], uint64(s.info.Conn.LocalAddr.Port()), 10)) {
			return
		}
	}
	h.SetBytes(headers.Authority, host[:i])
}

// normalizePath removes dot segments (RFC 3986 section 5.2.4) and, with
// merge, collapses repeated slashes, in the path part only. It fails on a
// path that does not start with '/'.
func normalizePath(p []byte, dots, merge bool) ([]byte, bool) {
	q := len(p)
	for i, c := range p {
		if c == '?' || c == '#' {
			q = i
			break
		}
	}
	path, rest := p[:q], p[q:]
	if len(path) == 0 || path[0] != '/' {
		return p, len(path) == 1 && path[0] == '*'
	}
	if !(dots && bytes.Contains(path, []byte("/."))) && !(merge && bytes.Contains(path, []byte("//"))) {
		return p, true // nothing to normalize: the common case allocates nothing
	}
	out := make([]byte, 0, len(p))
	segs := 0
	for i := 0; i < len(path); {
		j := i + 1
		for j < len(path) && path[j] != '/' {
			j++
		}
		seg := path[i+1 : j] // without the leading '/'
		switch {
		case merge && len(seg) == 0 && j < len(path):
		case dots && string(seg) == ".":
			if j == len(path) {
				out = append(out, '/')
			}
		case dots && string(seg) == "..":
			if segs > 0 {
				k := len(out) - 1
				for k >= 0 && out[k] != '/' {
					k--
				}
				out = out[:max(k, 0)]
				segs--
			}
			if j == len(path) {
				out = append(out, '/')
			}
		default:
			out = append(out, '/')
			out = append(out, seg...)
			segs++
		}
		i = j
	}
	if len(out) == 0 {
		out = append(out, '/')
	}
	return append(out, rest...), true
}

// newUUID writes a random (version 4) UUID.
func newUUID(dst *[36]byte) {
	const hex = "0123456789abcdef"
	var raw [16]byte
	a, b := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		raw[i] = byte(a >> (8 * i))
		raw[8+i] = byte(b >> (8 * i))
	}
	raw[6] = raw[6]&0x0f | 0x40
	raw[8] = raw[8]&0x3f | 0x80
	j := 0
	for i, c := range raw {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = hex[c>>4], hex[c&0xf]
		j += 2
	}
}

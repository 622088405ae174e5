package router

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/matcher"
	"github.com/outrider-proxy/outrider/proxy/runtime"
)

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
	pathConnect
)

// routeMatch is a compiled RouteMatch.
type routeMatch struct {
	kind          pathKind
	caseSensitive bool
	grpc          bool
	value         string // prefix or path
	re            *regexp.Regexp
	headers       []*matcher.Header
	query         []queryMatcher
	// frac is runtime_fraction; nil when not set.
	frac *fractionMatch
}

// fractionMatch is a route match's runtime_fraction: the default
// numerator/denominator, read from the process runtime instead when the
// key is set.
type fractionMatch struct {
	numerator   uint64
	denominator uint64
	runtimeKey  string
	fraction    *typev3.FractionalPercent
}

func compileMatch(m *routev3.RouteMatch) (routeMatch, error) {
	rm := routeMatch{caseSensitive: true}
	if m == nil {
		return rm, errors.New("match: required")
	}
	if v := m.GetCaseSensitive(); v != nil {
		rm.caseSensitive = v.GetValue()
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.value = pathPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		rm.kind, rm.value = pathExact, ps.Path
	case *routev3.RouteMatch_SafeRegex:
		if ps.SafeRegex.GetRegex() == "" {
			return rm, errors.New("match.safe_regex.regex: required")
		}
		re, err := matcher.Regex(ps.SafeRegex.GetRegex())
		if err != nil {
			return rm, fmt.Errorf("match.safe_regex: %w", err)
		}
		rm.kind, rm.re = pathRegex, re
	case *routev3.RouteMatch_PathSeparatedPrefix:
		p := ps.PathSeparatedPrefix
		if strings.ContainsAny(p, "?#") || strings.HasSuffix(p, "/") || !strings.HasPrefix(p, "/") {
			return rm, fmt.Errorf("match.path_separated_prefix: %q must start with '/', must not end with '/' or contain '?' or '#'", p)
		}
		rm.kind, rm.value = pathSeparatedPrefix, p
	case *routev3.RouteMatch_ConnectMatcher_:
		rm.kind = pathConnect
	case *routev3.RouteMatch_PathMatchPolicy:
		return rm, errors.New("match.path_match_policy: not supported")
	default:
		return rm, errors.New("match: one of prefix, path, safe_regex, path_separated_prefix or connect_matcher is required")
	}
	switch {
	case len(m.GetCookies()) > 0:
		return rm, errors.New("match.cookies: not supported")
	case m.GetTlsContext() != nil:
		return rm, errors.New("match.tls_context: not supported")
	case len(m.GetDynamicMetadata()) > 0:
		return rm, errors.New("match.dynamic_metadata: not supported")
	case m.GetFilterState() != nil && len(m.GetFilterState()) > 0:
		return rm, errors.New("match.filter_state: not supported")
	}
	if rf := m.GetRuntimeFraction(); rf != nil {
		d := rf.GetDefaultValue()
		f := &fractionMatch{numerator: uint64(d.GetNumerator()), runtimeKey: rf.GetRuntimeKey(), fraction: d}
		rm.frac = f
		switch d.GetDenominator() {
		case typev3.FractionalPercent_HUNDRED:
			f.denominator = 100
		case typev3.FractionalPercent_TEN_THOUSAND:
			f.denominator = 10000
		case typev3.FractionalPercent_MILLION:
			f.denominator = 1000000
		default:
			return rm, fmt.Errorf("match.runtime_fraction.default_value.denominator: unknown value %v", d.GetDenominator())
		}
	}
	for i, h := range m.GetHeaders() {
		hm, err := matcher.CompileHeader(h)
		if err != nil {
			return rm, fmt.Errorf("match.headers[%d].%w", i, err)
		}
		rm.headers = append(rm.headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm := queryMatcher{name: q.GetName()}
		switch s := q.GetQueryParameterMatchSpecifier().(type) {
		case *routev3.QueryParameterMatcher_StringMatch:
			sm, err := matcher.CompileString(s.StringMatch)
			if err != nil {
				return rm, fmt.Errorf("match.query_parameters[%d].string_match.%w", i, err)
			}
			qm.sm = sm
		case *routev3.QueryParameterMatcher_PresentMatch:
			qm.absent = !s.PresentMatch
		}
		rm.query = append(rm.query, qm)
	}
	rm.grpc = m.GetGrpc() != nil
	return rm, nil
}

// matches reports whether req satisfies every condition of m.
func (m *routeMatch) matches(req *headers.Map, rnd uint64) bool {
	if f := m.frac; f != nil {
		if f.runtimeKey != "" {
			if !runtime.Process().FeatureEnabled(f.runtimeKey, f.fraction, rnd) {
				return false
			}
		} else if rnd%f.denominator >= f.numerator {
			return false
		}
	}
	rawPath, _ := req.Get(headers.Path)
	path := stripQuery(rawPath)
	switch m.kind {
	case pathPrefix:
		if !hasPrefix(path, m.value, m.caseSensitive) {
			return false
		}
	case pathExact:
		if !equal(path, m.value, m.caseSensitive) {
			return false
		}
	case pathRegex:
		if !m.re.Match(path) {
			return false
		}
	case pathSeparatedPrefix:
		if !hasPrefix(path, m.value, m.caseSensitive) || (len(path) > len(m.value) && path[len(m.value)] != '/') {
			return false
		}
	case pathConnect:
		if v, _ := req.Get(headers.Method); string(v) != "CONNECT" {
			return false
		}
	}
	if m.grpc && !isGRPC(req) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].Match(req) {
			return false
		}
	}
	if len(m.query) > 0 {
		q := queryOf(rawPath)
		for i := range m.query {
			if !m.query[i].matches(q) {
				return false
			}
		}
	}
	return true
}

// stripQuery is the path without its query string and fragment.
func stripQuery(p []byte) []byte {
	for i, c := range p {
		if c == '?' || c == '#' {
			return p[:i]
		}
	}
	return p
}

func queryOf(p []byte) []byte {
	i := bytes.IndexByte(p, '?')
	if i < 0 {
		return nil
	}
	q := p[i+1:]
	if j := bytes.IndexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	return q
}

func hasPrefix(b []byte, s string, caseSensitive bool) bool {
	if len(b) < len(s) {
		return false
	}
	if caseSensitive {
		return string(b[:len(s)]) == s
	}
	return headers.EqualFold(b[:len(s)], s)
}

func equal(b []byte, s string, caseSensitive bool) bool {
	if caseSensitive {
		return string(b) == s
	}
	return headers.EqualFold(b, s)
}

// isGRPC is Envoy's Grpc::Common::isGrpcRequestHeaders content-type test.
func isGRPC(req *headers.Map) bool {
	ct, _ := req.Get("content-type")
	const g = "application/grpc"
	if len(ct) < len(g) || string(ct[:len(g)]) != g {
		return false
	}
	return len(ct) == len(g) || ct[len(g)] == '+' || ct[len(g)] == ';'
}

// queryMatcher is a compiled QueryParameterMatcher. With sm nil it tests
// presence (absent flips it: present_match false).
type queryMatcher struct {
	name   string
	sm     *matcher.String
	absent bool
}

// matches looks the first value of the parameter up in the raw (undecoded)
// query string, as Envoy's route matching does.
func (q *queryMatcher) matches(query []byte) bool {
	val, found := firstQueryValue(query, q.name)
	if q.sm == nil {
		return found != q.absent
	}
	return found && q.sm.Match(val)
}

func firstQueryValue(query []byte, name string) ([]byte, bool) {
	for len(query) > 0 {
		var kv []byte
		if i := bytes.IndexByte(query, '&'); i >= 0 {
			kv, query = query[:i], query[i+1:]
		} else {
			kv, query = query, nil
		}
		k, v := kv, []byte(nil)
		if i := bytes.IndexByte(kv, '='); i >= 0 {
			k, v = kv[:i], kv[i+1:]
		}
		if string(k) == name {
			return v, true
		}
	}
	return nil, false
}

package tlsctx

import (
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// anySAN marks a legacy match_subject_alt_names matcher, tried against DNS,
// URI, email and IP SANs.
const anySAN = tlsv3.SubjectAltNameMatcher_SanType(-1)

type sanMatcher struct {
	typ tlsv3.SubjectAltNameMatcher_SanType
	m   strMatcher
}

type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strContains
	strRegex
)

// strMatcher is a compiled envoy.type.matcher.v3.StringMatcher; with
// ignoreCase, s is lower-case.
type strMatcher struct {
	kind       strKind
	s          string
	re         *regexp.Regexp
	ignoreCase bool
}

func compileStringMatcher(m *matcherv3.StringMatcher, path string) (strMatcher, error) {
	sm := strMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.s = strExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.s = strPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.s = strSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.s = strContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return sm, fmt.Errorf("%s.safe_regex.regex: %w", path, err)
		}
		sm.kind, sm.re, sm.ignoreCase = strRegex, re, false
	case nil:
		return sm, errors.New(path + ".match_pattern: required")
	default:
		return sm, fmt.Errorf("%s: match pattern %T not supported by outrider yet", path, p)
	}
	if sm.ignoreCase {
		sm.s = strings.ToLower(sm.s)
	}
	return sm, nil
}

func (m *strMatcher) match(v string) bool {
	if m.ignoreCase {
		v = strings.ToLower(v)
	}
	switch m.kind {
	case strExact:
		return v == m.s
	case strPrefix:
		return strings.HasPrefix(v, m.s)
	case strSuffix:
		return strings.HasSuffix(v, m.s)
	case strContains:
		return strings.Contains(v, m.s)
	case strRegex:
		return m.re.MatchString(v)
	}
	return false
}

func compileSANMatcher(m *tlsv3.SubjectAltNameMatcher, path string) (sanMatcher, error) {
	switch m.GetSanType() {
	case tlsv3.SubjectAltNameMatcher_DNS, tlsv3.SubjectAltNameMatcher_URI,
		tlsv3.SubjectAltNameMatcher_EMAIL, tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
	case tlsv3.SubjectAltNameMatcher_SAN_TYPE_UNSPECIFIED:
		return sanMatcher{}, fmt.Errorf("%s.san_type: required", path)
	default:
		return sanMatcher{}, fmt.Errorf("%s.san_type: %s not supported by outrider yet", path, m.GetSanType())
	}
	if m.GetMatcher() == nil {
		return sanMatcher{}, fmt.Errorf("%s.matcher: required", path)
	}
	sm, err := compileStringMatcher(m.GetMatcher(), path+".matcher")
	if err != nil {
		return sanMatcher{}, err
	}
	return sanMatcher{typ: m.GetSanType(), m: sm}, nil
}

// matchAnySAN reports whether any matcher matches a SAN of its type.
func matchAnySAN(ms []sanMatcher, c *x509.Certificate) bool {
	for i := range ms {
		m := &ms[i]
		t := m.typ
		if t == tlsv3.SubjectAltNameMatcher_DNS || t == anySAN {
			for _, d := range c.DNSNames {
				if m.matchDNS(d) {
					return true
				}
			}
		}
		if t == tlsv3.SubjectAltNameMatcher_URI || t == anySAN {
			for _, u := range c.URIs {
				if m.m.match(u.String()) {
					return true
				}
			}
		}
		if t == tlsv3.SubjectAltNameMatcher_EMAIL || t == anySAN {
			for _, e := range c.EmailAddresses {
				if m.m.match(e) {
					return true
				}
			}
		}
		if t == tlsv3.SubjectAltNameMatcher_IP_ADDRESS || t == anySAN {
			for _, ip := range c.IPAddresses {
				if m.m.match(ip.String()) {
					return true
				}
			}
		}
	}
	return false
}

// matchDNS matches a DNS SAN; an exact matcher also accepts a wildcard SAN
// ("*.example.com") covering its value, as Envoy's dnsNameMatch does.
func (m *sanMatcher) matchDNS(san string) bool {
	if m.m.kind == strExact {
		return dnsNameMatch(m.m.s, san)
	}
	return m.m.match(san)
}

// dnsNameMatch reports whether name is covered by pattern (a SAN, possibly
// "*.suffix" standing for exactly one label), case-insensitively.
func dnsNameMatch(name, pattern string) bool {
	name, pattern = strings.ToLower(name), strings.ToLower(pattern)
	if name == pattern {
		return true
	}
	if rest, ok := strings.CutPrefix(pattern, "*"); ok && strings.HasPrefix(rest, ".") {
		i := strings.IndexByte(name, '.')
		return i > 0 && name[i:] == rest
	}
	return false
}

func matchDNSName(sans []string, name string) bool {
	for _, s := range sans {
		if dnsNameMatch(name, s) {
			return true
		}
	}
	return false
}

package tlsctx

import (
	"crypto/x509"
	"fmt"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/outrider-proxy/outrider/proxy/matcher"
)

// anySAN marks a legacy match_subject_alt_names matcher, tried against DNS,
// URI, email and IP SANs.
const anySAN = tlsv3.SubjectAltNameMatcher_SanType(-1)

type sanMatcher struct {
	typ tlsv3.SubjectAltNameMatcher_SanType
	m   *matcher.String
}

// compileStringMatcher compiles a SAN string matcher; the error is
// prefixed with path, the matcher's field path.
func compileStringMatcher(m *matcherv3.StringMatcher, path string) (*matcher.String, error) {
	sm, err := matcher.CompileString(m)
	if err != nil {
		return nil, fmt.Errorf("%s.%w", path, err)
	}
	return sm, nil
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
				if m.m.MatchString(u.String()) {
					return true
				}
			}
		}
		if t == tlsv3.SubjectAltNameMatcher_EMAIL || t == anySAN {
			for _, e := range c.EmailAddresses {
				if m.m.MatchString(e) {
					return true
				}
			}
		}
		if t == tlsv3.SubjectAltNameMatcher_IP_ADDRESS || t == anySAN {
			for _, ip := range c.IPAddresses {
				if m.m.MatchString(ip.String()) {
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
	if exact, ok := m.m.Exact(); ok {
		return dnsNameMatch(exact, san)
	}
	return m.m.MatchString(san)
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

// matchOverrideSAN is Envoy's verifySubjectAltName for one name of a SAN
// list override: a DNS SAN matching name (wildcards allowed), or a URI or
// IP SAN whose text equals it.
func matchOverrideSAN(leaf *x509.Certificate, name string) bool {
	if matchDNSName(leaf.DNSNames, name) {
		return true
	}
	for _, u := range leaf.URIs {
		if u.String() == name {
			return true
		}
	}
	for _, ip := range leaf.IPAddresses {
		if ip.String() == name {
			return true
		}
	}
	return false
}

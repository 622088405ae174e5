package accesslog

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// headerMatcher is a compiled route HeaderMatcher, with Envoy's
// HeaderUtility semantics: several values of a header are joined with ",",
// a missing header fails every match but present_match: false (unless
// treat_missing_header_as_empty), and invert_match flips the result.
type headerMatcher struct {
	name           string
	present        *bool // present_match (or no specifier: must be present)
	sm             *stringMatch
	rangeMatch     bool
	start, end     int64
	invert         bool
	missingAsEmpty bool
}

// stringMatch is a compiled StringMatcher; s is lower-case when ignoreCase.
type stringMatch struct {
	exact, prefix, suffix, contains bool
	s                               string
	re                              *regexp.Regexp
	ignoreCase                      bool
}

func compileHeaderMatcher(h *routev3.HeaderMatcher) (headerMatcher, error) {
	if h == nil {
		return headerMatcher{}, errors.New("required")
	}
	m := headerMatcher{name: strings.ToLower(h.GetName()), invert: h.GetInvertMatch(),
		missingAsEmpty: h.GetTreatMissingHeaderAsEmpty()}
	if m.name == "" {
		return m, errors.New("name: required")
	}
	t := true
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		m.present = &t
	case *routev3.HeaderMatcher_PresentMatch:
		v := s.PresentMatch
		m.present = &v
	case *routev3.HeaderMatcher_ExactMatch:
		m.sm = &stringMatch{exact: true, s: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		m.sm = &stringMatch{prefix: true, s: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		m.sm = &stringMatch{suffix: true, s: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		m.sm = &stringMatch{contains: true, s: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := compileRegex(s.SafeRegexMatch)
		if err != nil {
			return m, fmt.Errorf("safe_regex_match.%w", err)
		}
		m.sm = &stringMatch{re: re}
	case *routev3.HeaderMatcher_RangeMatch:
		m.rangeMatch, m.start, m.end = true, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := compileStringMatch(s.StringMatch)
		if err != nil {
			return m, fmt.Errorf("string_match.%w", err)
		}
		m.sm = sm
	default:
		return m, fmt.Errorf("header_match_specifier: unsupported %T", s)
	}
	return m, nil
}

func compileRegex(r *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if r.GetRegex() == "" {
		return nil, errors.New("regex: required")
	}
	re, err := regexp.Compile("^(?:" + r.GetRegex() + ")$")
	if err != nil {
		return nil, fmt.Errorf("regex: %w", err)
	}
	return re, nil
}

func compileStringMatch(m *matcherv3.StringMatcher) (*stringMatch, error) {
	sm := &stringMatch{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.exact, sm.s = true, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.prefix, sm.s = true, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.suffix, sm.s = true, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.contains, sm.s = true, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return nil, fmt.Errorf("safe_regex.%w", err)
		}
		sm.re, sm.ignoreCase = re, false
	default:
		return nil, errors.New("match_pattern: one of exact, prefix, suffix, contains or safe_regex is required")
	}
	if sm.ignoreCase {
		sm.s = strings.ToLower(sm.s)
	}
	return sm, nil
}

func (m *stringMatch) match(v []byte) bool {
	if m.re != nil {
		return m.re.Match(v)
	}
	if m.ignoreCase {
		v = bytes.ToLower(v)
	}
	switch {
	case m.exact:
		return string(v) == m.s
	case m.prefix:
		return bytes.HasPrefix(v, []byte(m.s))
	case m.suffix:
		return bytes.HasSuffix(v, []byte(m.s))
	}
	return bytes.Contains(v, []byte(m.s))
}

func (m *headerMatcher) matches(h *headers.Map) bool {
	n := h.Count(m.name)
	if m.present != nil {
		return (n > 0) == *m.present != m.invert
	}
	var v []byte
	switch {
	case n == 0:
		if !m.missingAsEmpty {
			return false
		}
	case n == 1:
		v, _ = h.Get(m.name)
	default:
		h.Values(m.name, func(b []byte) bool {
			if v != nil {
				v = append(v, ',')
			}
			v = append(v, b...)
			return true
		})
	}
	var ok bool
	if m.rangeMatch {
		x, err := strconv.ParseInt(string(v), 10, 64)
		ok = err == nil && x >= m.start && x < m.end
	} else {
		ok = m.sm.match(v)
	}
	return ok != m.invert
}

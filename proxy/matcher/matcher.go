// Package matcher compiles Envoy's envoy.type.matcher.v3.StringMatcher,
// config.route.v3.HeaderMatcher and config.core.v3.CidrRange once into
// immutable matchers, the one implementation shared by the router, RBAC,
// access-log filters and TLS SAN checks. Matching follows Envoy's semantics
// (regexes anchored, ignore_case ASCII-only, multiple header values joined
// with ",") and does not allocate for single-valued headers; compile errors
// name the offending field as a dotted path ("string_match.safe_regex.regex:
// ...") that callers prefix with their own.
package matcher

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"strconv"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

type strKind uint8

const (
	kExact strKind = iota
	kPrefix
	kSuffix
	kContains
	kRegex
)

// String is a compiled StringMatcher. The zero value matches only "".
type String struct {
	kind       strKind
	s          string // lower-case with ignoreCase
	re         *regexp.Regexp
	ignoreCase bool
}

// CompileString compiles m; the error names the offending field.
func CompileString(m *matcherv3.StringMatcher) (*String, error) {
	if m == nil {
		return nil, errors.New("match_pattern: required")
	}
	sm := &String{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.s = kExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.s = kPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.s = kSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.s = kContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := CompileRegex(p.SafeRegex)
		if err != nil {
			return nil, fmt.Errorf("safe_regex.%w", err)
		}
		sm.kind, sm.re, sm.ignoreCase = kRegex, re, false
	case nil:
		return nil, errors.New("match_pattern: required")
	default:
		return nil, fmt.Errorf("match_pattern: %T is not supported by outrider yet", p)
	}
	if sm.ignoreCase {
		sm.s = asciiLower(sm.s)
	}
	return sm, nil
}

// CompileRegex compiles a RegexMatcher anchored at both ends, as Envoy's
// full-match RE2 semantics require; the error names the regex field.
func CompileRegex(m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if m.GetRegex() == "" {
		return nil, errors.New("regex: required")
	}
	re, err := Regex(m.GetRegex())
	if err != nil {
		return nil, fmt.Errorf("regex: %w", err)
	}
	return re, nil
}

// Regex compiles expr anchored at both ends (Envoy's full match); the error
// is regexp's own (quoting expr, not the anchored form), for callers that
// name the field themselves.
func Regex(expr string) (*regexp.Regexp, error) {
	anchored := "^(?:" + expr + ")$"
	re, err := regexp.Compile(anchored)
	if se := (*syntax.Error)(nil); errors.As(err, &se) && se.Expr == anchored {
		se.Expr = expr
	}
	return re, err
}

// Exact returns the pattern of an exact matcher (lower-case with
// ignore_case) and true, or "" and false for any other kind; TLS uses it to
// apply DNS wildcard rules to exact SAN matchers.
func (m *String) Exact() (string, bool) {
	if m.kind != kExact {
		return "", false
	}
	return m.s, true
}

// MatchString is Match for a string; it does not copy v.
func (m *String) MatchString(v string) bool {
	if m.kind == kRegex {
		return m.re.MatchString(v)
	}
	// Match only reads v, so viewing the string's bytes is safe.
	return m.Match(unsafe.Slice(unsafe.StringData(v), len(v)))
}

// Match reports whether v satisfies m.
func (m *String) Match(v []byte) bool {
	cs := !m.ignoreCase
	switch m.kind {
	case kExact:
		return equal(v, m.s, cs)
	case kPrefix:
		return len(v) >= len(m.s) && equal(v[:len(m.s)], m.s, cs)
	case kSuffix:
		return len(v) >= len(m.s) && equal(v[len(v)-len(m.s):], m.s, cs)
	case kContains:
		if cs {
			return bytes.Contains(v, []byte(m.s))
		}
		for i := 0; i+len(m.s) <= len(v); i++ {
			if equal(v[i:i+len(m.s)], m.s, false) {
				return true
			}
		}
		return false
	case kRegex:
		return m.re.Match(v)
	}
	return false
}

func equal(b []byte, s string, caseSensitive bool) bool {
	if caseSensitive {
		return string(b) == s
	}
	return headers.EqualFold(b, s)
}

// asciiLower lower-cases ASCII letters only, as Envoy's absl::AsciiStrToLower
// (ignore_case never folds non-ASCII characters).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

type hdrKind uint8

const (
	hPresent hdrKind = iota
	hString
	hRange
)

// Header is a compiled HeaderMatcher; it is immutable and safe for
// concurrent use.
type Header struct {
	name           string
	kind           hdrKind
	present        bool // hPresent: the header must (true) or must not be present
	sm             *String
	start, end     int64
	invert         bool
	missingAsEmpty bool
}

// CompileHeader compiles h; the error names the offending field. A nil h
// fails with "name: required".
func CompileHeader(h *routev3.HeaderMatcher) (*Header, error) {
	name := asciiLower(h.GetName())
	if name == "" {
		return nil, errors.New("name: required")
	}
	hm := &Header{name: name, invert: h.GetInvertMatch(), missingAsEmpty: h.GetTreatMissingHeaderAsEmpty()}
	str := func(k strKind, s string) { hm.kind, hm.sm = hString, &String{kind: k, s: s} }
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		hm.kind, hm.present = hPresent, true
	case *routev3.HeaderMatcher_PresentMatch:
		hm.kind, hm.present = hPresent, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		str(kExact, s.ExactMatch)
	case *routev3.HeaderMatcher_PrefixMatch:
		str(kPrefix, s.PrefixMatch)
	case *routev3.HeaderMatcher_SuffixMatch:
		str(kSuffix, s.SuffixMatch)
	case *routev3.HeaderMatcher_ContainsMatch:
		str(kContains, s.ContainsMatch)
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := CompileRegex(s.SafeRegexMatch)
		if err != nil {
			return nil, fmt.Errorf("safe_regex_match.%w", err)
		}
		hm.kind, hm.sm = hString, &String{kind: kRegex, re: re}
	case *routev3.HeaderMatcher_RangeMatch:
		hm.kind, hm.start, hm.end = hRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_StringMatch:
		hm.kind = hString
		if hm.sm, err = CompileString(s.StringMatch); err != nil {
			return nil, fmt.Errorf("string_match.%w", err)
		}
	default:
		return nil, fmt.Errorf("header_match_specifier: %T is not supported by outrider yet", s)
	}
	return hm, nil
}

// Match follows Envoy's HeaderUtility::matchHeaders: several values of one
// header are joined with ","; a missing header fails every matcher but
// present_match unless treat_missing_header_as_empty; invert_match flips
// the result. A nil map has no headers.
func (h *Header) Match(req *headers.Map) bool {
	n := 0
	if req != nil {
		n = req.Count(h.name)
	}
	if h.kind == hPresent {
		return (n > 0) == h.present != h.invert
	}
	var v []byte
	switch {
	case n == 0:
		if !h.missingAsEmpty {
			return false
		}
	case n == 1:
		v, _ = req.Get(h.name)
	default:
		req.Values(h.name, func(b []byte) bool {
			if v != nil {
				v = append(v, ',')
			}
			v = append(v, b...)
			return true
		})
	}
	var ok bool
	if h.kind == hRange {
		x, err := strconv.ParseInt(string(v), 10, 64)
		ok = err == nil && x >= h.start && x < h.end
	} else {
		ok = h.sm.Match(v)
	}
	return ok != h.invert
}

// CompileCIDR compiles a CidrRange into a prefix (IPv4-mapped addresses are
// matched as IPv4 by Contains).
func CompileCIDR(r *corev3.CidrRange) (netip.Prefix, error) {
	a, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address_prefix: %w", err)
	}
	bits := int(r.GetPrefixLen().GetValue())
	p, err := a.Unmap().Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("prefix_len: %w", err)
	}
	return p, nil
}

// Contains reports whether p contains addr, treating IPv4-mapped IPv6
// addresses as IPv4.
func Contains(p netip.Prefix, addr netip.Addr) bool {
	return addr.IsValid() && p.Contains(addr.Unmap())
}

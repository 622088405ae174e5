package router

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

type smKind uint8

const (
	smExact smKind = iota
	smPrefix
	smSuffix
	smContains
	smRegex
)

// stringMatcher is a compiled envoy.type.matcher.v3.StringMatcher. With
// ignoreCase, s is stored lower-case.
type stringMatcher struct {
	kind       smKind
	s          string
	re         *regexp.Regexp
	ignoreCase bool
}

func compileStringMatcher(m *matcherv3.StringMatcher) (stringMatcher, error) {
	sm := stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.s = smExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.s = smPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.s = smSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.s = smContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return sm, fmt.Errorf("safe_regex: %w", err)
		}
		sm.kind, sm.re, sm.ignoreCase = smRegex, re, false
	case nil:
		return sm, errors.New("match_pattern: required")
	default:
		return sm, fmt.Errorf("unsupported match pattern %T", p)
	}
	if sm.ignoreCase {
		sm.s = strings.ToLower(sm.s)
	}
	return sm, nil
}

func (m *stringMatcher) match(v []byte) bool {
	switch m.kind {
	case smExact:
		return equal(v, m.s, !m.ignoreCase)
	case smPrefix:
		return hasPrefix(v, m.s, !m.ignoreCase)
	case smSuffix:
		if len(v) < len(m.s) {
			return false
		}
		return equal(v[len(v)-len(m.s):], m.s, !m.ignoreCase)
	case smContains:
		if !m.ignoreCase {
			return bytes.Contains(v, []byte(m.s))
		}
		for i := 0; i+len(m.s) <= len(v); i++ {
			if equal(v[i:i+len(m.s)], m.s, false) {
				return true
			}
		}
		return false
	case smRegex:
		return m.re.Match(v)
	}
	return false
}

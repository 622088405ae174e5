package router

import (
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// lbContext fills the hash key from the route's hash_policy for RING_HASH
// and MAGLEV clusters, as Envoy's HashPolicyImpl::generateHash: each policy
// that yields a hash is combined by rotate-and-xor, and a terminal policy
// stops the walk once any hash exists (even when it gave none itself).
func (f *filter) lbContext() *upstream.LBContext {
	info := f.cb.Info()
	f.lb = upstream.LBContext{DownstreamConn: info.Conn, Headers: f.cb.RequestHeaders()}
	var key uint64
	for i := range f.route.HashPolicies() {
		p := &f.route.HashPolicies()[i]
		if v, ok := f.policyHash(p, info); ok {
			if f.lb.HasHash {
				key = key<<1 | key>>63
			}
			key ^= v
			f.lb.HasHash = true
		}
		if p.Terminal && f.lb.HasHash {
			break
		}
	}
	f.lb.HashKey = key
	return &f.lb
}

// policyHash is one hash policy's hash for the request, if it gives one.
func (f *filter) policyHash(p *router.HashPolicy, info *streaminfo.Stream) (uint64, bool) {
	h := f.cb.RequestHeaders()
	switch p.Kind {
	case router.HashHeader:
		return headerHash(h, p)
	case router.HashSourceIP:
		if info.Conn == nil || !info.Conn.RemoteAddr.Addr().IsValid() {
			return 0, false
		}
		return hashAddr(info.Conn.RemoteAddr.Addr()), true
	case router.HashCookie:
		if val, found := cookieValue(h, p.Name); found {
			return upstream.XXHash64(val, 0), true
		}
		if !p.GenerateCookie || info.Conn == nil {
			return 0, false
		}
		// Envoy makes the value from the connection's remote and local
		// addresses and sets it on the response, so later requests stick.
		val := cookieHex(upstream.XXHash64(info.Conn.RemoteAddr.String()+info.Conn.LocalAddr.String(), 0))
		f.setCookie = setCookieValue(p.Name, val, p.CookiePath, p.CookieTTL)
		return upstream.XXHash64(val, 0), true
	case router.HashQueryParameter:
		if val, found := queryParam(h, p.Name); found {
			return upstream.XXHash64(val, 0), true
		}
	case router.HashFilterState:
		switch o := info.FilterStateObject(p.Name).(type) {
		case streaminfo.Hashable:
			return o.Hash()
		case streaminfo.StringObject:
			return upstream.XXHash64(string(o), 0), true
		}
	}
	return 0, false
}

// headerHash hashes every value of the header (after regex_rewrite), in
// sorted order so that the values' order does not matter, chaining each
// value's xxHash64 as the next one's seed (Envoy's HashUtil::xxHash64 over
// a span).
func headerHash(h *headers.Map, p *router.HashPolicy) (uint64, bool) {
	var one []byte
	var many [][]byte
	n := 0
	h.Values(p.Name, func(v []byte) bool {
		v = p.Rewrite(v)
		if n == 0 {
			one = v
		} else {
			if n == 1 {
				many = append(many, one)
			}
			many = append(many, v)
		}
		n++
		return true
	})
	switch n {
	case 0:
		return 0, false
	case 1:
		return upstream.XXHash64(string(one), 0), true
	}
	slices.SortFunc(many, func(a, b []byte) int { return strings.Compare(string(a), string(b)) })
	var seed uint64
	for _, v := range many {
		seed = upstream.XXHash64(string(v), seed)
	}
	return seed, true
}

// cookieHex is Envoy's Hex::uint64ToHex: 16 lower-case hex digits.
func cookieHex(v uint64) string {
	s := strconv.FormatUint(v, 16)
	return strings.Repeat("0", 16-len(s)) + s
}

func hashAddr(a netip.Addr) uint64 {
	var b [46]byte
	return upstream.XXHash64(string(a.Unmap().AppendTo(b[:0])), 0)
}

// setCookieValue is the Set-Cookie header Envoy sends for a generated
// hash-policy cookie.
func setCookieValue(name, value, path string, ttl time.Duration) string {
	v := name + "=\"" + value + "\""
	if ttl > 0 {
		v += "; Max-Age=" + strconv.FormatInt(int64(ttl/time.Second), 10)
	}
	if path != "" {
		v += "; Path=" + path
	}
	return v + "; HttpOnly"
}

// cookieValue finds a cookie in the request's cookie headers.
func cookieValue(h *headers.Map, name string) (string, bool) {
	var val string
	var found bool
	h.Values("cookie", func(v []byte) bool {
		for _, kv := range strings.Split(string(v), ";") {
			k, cv, _ := strings.Cut(strings.TrimSpace(kv), "=")
			if k == name {
				val, found = strings.Trim(cv, `"`), true
				return false
			}
		}
		return true
	})
	return val, found
}

// queryParam is the first value of the query parameter name, percent
// decoded as Envoy's parseAndDecodeQueryString does.
func queryParam(h *headers.Map, name string) (string, bool) {
	path, _ := h.Get(headers.Path)
	i := strings.IndexByte(string(path), '?')
	if i < 0 {
		return "", false
	}
	q := string(path[i+1:])
	if j := strings.IndexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	for _, kv := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k == name {
			if d, err := url.PathUnescape(v); err == nil {
				v = d
			}
			return v, true
		}
	}
	return "", false
}

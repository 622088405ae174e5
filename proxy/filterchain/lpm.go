package filterchain

import (
	"fmt"
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// anyPrefix is the map key of the catch-all entry (a chain without ranges at
// this level). Envoy expands it to 0.0.0.0/0 and ::/0; an explicitly
// configured /0 is found first by lookup, so it wins over the catch-all.
var anyPrefix netip.Prefix

// fakeAddr stands in for a non-IP (unix socket) address, as in Envoy: it only
// matches the catch-all (or a range containing 255.255.255.255).
var fakeAddr = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// lpm is a longest-prefix-match table from CIDR ranges to values. It is
// mutated only while compiling and read concurrently afterwards.
type lpm[T any] struct {
	lens4 []uint8 // distinct IPv4 prefix lengths, longest first
	lens6 []uint8 // distinct IPv6 prefix lengths, longest first
	m     map[netip.Prefix]T
}

// slot returns the value stored for p, creating it with mk when absent.
func (l *lpm[T]) slot(p netip.Prefix, mk func() T) T {
	if l.m == nil {
		l.m = make(map[netip.Prefix]T)
	}
	if v, ok := l.m[p]; ok {
		return v
	}
	v := mk()
	l.m[p] = v
	if p != anyPrefix {
		if p.Addr().Is4() {
			l.lens4 = insertLen(l.lens4, uint8(p.Bits()))
		} else {
			l.lens6 = insertLen(l.lens6, uint8(p.Bits()))
		}
	}
	return v
}

// insertLen adds n to the descending, duplicate-free list lens.
func insertLen(lens []uint8, n uint8) []uint8 {
	for i, v := range lens {
		if v == n {
			return lens
		}
		if v < n {
			lens = append(lens, 0)
			copy(lens[i+1:], lens[i:])
			lens[i] = n
			return lens
		}
	}
	return append(lens, n)
}

// lookup returns the value of the longest configured range containing a, or
// the catch-all value; a must be valid and unmapped.
func (l *lpm[T]) lookup(a netip.Addr) (T, bool) {
	lens := l.lens6
	if a.Is4() {
		lens = l.lens4
	}
	for _, n := range lens {
		p, _ := a.Prefix(int(n))
		if v, ok := l.m[p]; ok {
			return v, true
		}
	}
	v, ok := l.m[anyPrefix]
	return v, ok
}

// parseRanges converts proto CIDR ranges as Envoy's CidrRange::create does:
// the address must be an IP literal, the length is clamped to the address
// size and host bits are masked off. An empty list yields [anyPrefix].
func parseRanges(field string, ranges []*corev3.CidrRange) ([]netip.Prefix, error) {
	if len(ranges) == 0 {
		return []netip.Prefix{anyPrefix}, nil
	}
	out := make([]netip.Prefix, 0, len(ranges))
	for i, r := range ranges {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%s[%d]: malformed IP address: %s", field, i, r.GetAddressPrefix())
		}
		bits := int(r.GetPrefixLen().GetValue())
		if r.GetPrefixLen().GetValue() > uint32(a.BitLen()) {
			bits = a.BitLen()
		}
		p, _ := a.Prefix(bits)
		out = append(out, p)
	}
	return out, nil
}

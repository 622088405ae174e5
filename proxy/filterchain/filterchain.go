// Package filterchain selects a listener's filter chain for a new connection
// exactly as Envoy's FilterChainManagerImpl does with filter_chain_match.
// A Matcher is compiled once from Listener.filter_chains and
// default_filter_chain, is immutable afterwards, and Match is lock-free and
// allocation-free, so it may be called from any number of goroutines.
//
// Criteria are applied level by level in Envoy's order: destination port,
// destination IP, server name, transport protocol, application protocols,
// direct source IP, source type, source IP, source port. At each level only
// the most specific configured value that matches the connection survives
// (an unset criterion is the least specific value); there is no
// backtracking, so a connection that dies at a deeper level gets the default
// chain even if a less specific branch would have matched.
package filterchain

import (
	"fmt"
	"net/netip"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
)

const (
	// DefaultChain is returned by Match when the listener's
	// default_filter_chain is selected.
	DefaultChain = -1
	// NoMatch is returned by Match when no chain matches and the listener
	// has no default_filter_chain; Envoy closes such connections and counts
	// them in the listener's no_filter_chain_match counter (owned by the caller).
	NoMatch = -2
)

// Transport protocol names as set by listener filters.
const (
	TransportRawBuffer = "raw_buffer"
	TransportTLS       = "tls"
)

// ConnInfo is what the matcher knows about a connection after the listener
// filters ran. Zero address values mean a non-IP (unix socket) address.
type ConnInfo struct {
	// DstAddr is the local (or original-destination) address.
	DstAddr netip.AddrPort
	// SrcAddr is the peer address, possibly rewritten by the PROXY protocol.
	SrcAddr netip.AddrPort
	// DirectSrcAddr is the address of the TCP peer itself (before any PROXY
	// protocol rewrite); zero means the same as SrcAddr.
	DirectSrcAddr netip.AddrPort
	// ServerName is the SNI, lower-case; "" if none.
	ServerName string
	// TransportProtocol is "raw_buffer" when no listener filter set it, or
	// "tls" after tls_inspector detected TLS. "" is treated as a value that
	// only chains without transport_protocol match.
	TransportProtocol string
	// ALPN lists the client's application protocols in its order; nil if none.
	ALPN []string
}

// Matcher is a compiled filter chain selector. The zero value matches nothing.
type Matcher struct {
	ports      map[uint16]*lpm[serverNames] // key 0: chains without destination_port
	hasDefault bool
	needsTLS   bool
}

// The levels below destination IP. Maps are only written by Compile.
type (
	serverNames map[string]transports      // "" = no server_names; ".x.com" = "*.x.com"
	transports  map[string]alpns           // "" = no transport_protocol
	alpns       map[string]*lpm[*srcTypes] // "" = no application_protocols; value keyed by direct source IP
	srcTypes    [3]*lpm[srcPorts]          // indexed by ConnectionSourceType; nil = none configured
	srcPorts    map[uint32]int             // 0 = no source_ports; value = chain index
)

// Compile builds a Matcher for chains (Listener.filter_chains) and
// defaultChain (Listener.default_filter_chain, nil if unset). Errors name the
// offending chain by index and name, as Envoy rejects such listeners:
// identical filter_chain_match, overlapping rules, malformed CIDRs, partial
// server_names wildcards, address_suffix/suffix_len. The caller must reject
// Listener.filter_chain_matcher itself; it is not handled here.
func Compile(chains []*listenerv3.FilterChain, defaultChain *listenerv3.FilterChain) (*Matcher, error) {
	m := &Matcher{ports: make(map[uint16]*lpm[serverNames]), hasDefault: defaultChain != nil}
	seen := make(map[string]int, len(chains))
	owner := func(i int) string { return chainLabel(chains, i) }
	for i, fc := range chains {
		if fc == nil {
			return nil, fmt.Errorf("%s: filter chain is null", owner(i))
		}
		fcm := fc.GetFilterChainMatch()
		if fcm == nil {
			fcm = &listenerv3.FilterChainMatch{}
		}
		if fcm.GetAddressSuffix() != "" || fcm.GetSuffixLen() != nil {
			return nil, fmt.Errorf("%s: contains unimplemented fields (address_suffix, suffix_len)", owner(i))
		}
		key, err := proto.MarshalOptions{Deterministic: true}.Marshal(fcm)
		if err != nil {
			return nil, fmt.Errorf("%s: filter_chain_match: %w", owner(i), err)
		}
		if j, dup := seen[string(key)]; dup {
			return nil, fmt.Errorf("%s has the same matching rules defined as %s", owner(i), owner(j))
		}
		seen[string(key)] = i
		if err := m.add(i, fcm); err != nil {
			if oe, ok := err.(overlapError); ok {
				return nil, fmt.Errorf("%s: multiple filter chains with overlapping matching rules are defined (overlaps %s)", owner(i), owner(oe.other))
			}
			return nil, fmt.Errorf("%s: filter_chain_match: %w", owner(i), err)
		}
		if needsTLS(fcm) {
			m.needsTLS = true
		}
	}
	return m, nil
}

// chainLabel names chains[i] for error messages.
func chainLabel(chains []*listenerv3.FilterChain, i int) string {
	if n := chains[i].GetName(); n != "" {
		return fmt.Sprintf("filter_chains[%d] %q", i, n)
	}
	return fmt.Sprintf("filter_chains[%d]", i)
}

// needsTLS mirrors Envoy's needTlsInspector check for one chain.
func needsTLS(fcm *listenerv3.FilterChainMatch) bool {
	tp := fcm.GetTransportProtocol()
	return tp == TransportTLS ||
		(tp == "" && (len(fcm.GetServerNames()) > 0 || len(fcm.GetApplicationProtocols()) > 0))
}

// overlapError reports that chain index other already owns a leaf.
type overlapError struct{ other int }

func (overlapError) Error() string { return "overlapping matching rules" }

// orAny returns list, or [""] (the "unset" key) when list is empty.
func orAny(list []string) []string {
	if len(list) == 0 {
		return []string{""}
	}
	return list
}

// add inserts chain idx under every combination of its criteria values.
func (m *Matcher) add(idx int, fcm *listenerv3.FilterChainMatch) error {
	port := fcm.GetDestinationPort().GetValue()
	if port > 65535 {
		return fmt.Errorf("destination_port: %d is not a valid port", port)
	}
	for i, p := range fcm.GetSourcePorts() {
		if p > 65535 {
			return fmt.Errorf("source_ports[%d]: %d is not a valid port", i, p)
		}
	}
	dstIPs, err := parseRanges("prefix_ranges", fcm.GetPrefixRanges())
	if err != nil {
		return err
	}
	directIPs, err := parseRanges("direct_source_prefix_ranges", fcm.GetDirectSourcePrefixRanges())
	if err != nil {
		return err
	}
	srcIPs, err := parseRanges("source_prefix_ranges", fcm.GetSourcePrefixRanges())
	if err != nil {
		return err
	}
	names := make([]string, 0, len(fcm.GetServerNames()))
	for i, n := range fcm.GetServerNames() {
		if strings.Contains(n, "*") && !strings.HasPrefix(n, "*.") {
			return fmt.Errorf("server_names[%d] %q: partial wildcards are not supported in \"server_names\"", i, n)
		}
		n = strings.ToLower(n)
		if strings.HasPrefix(n, "*.") {
			n = n[1:] // "*.example.com" is stored as ".example.com"
		}
		names = append(names, n)
	}
	st := fcm.GetSourceType()
	if st < 0 || int(st) >= len(srcTypes{}) {
		return fmt.Errorf("source_type: unknown value %d", st)
	}
	srcPortList := fcm.GetSourcePorts()
	if len(srcPortList) == 0 {
		srcPortList = []uint32{0}
	}

	ipTable := m.ports[uint16(port)]
	if ipTable == nil {
		ipTable = &lpm[serverNames]{}
		m.ports[uint16(port)] = ipTable
	}
	for _, dip := range dstIPs {
		sn := ipTable.slot(dip, func() serverNames { return serverNames{} })
		for _, name := range orAny(names) {
			tps := sn[name]
			if tps == nil {
				tps = transports{}
				sn[name] = tps
			}
			tp := fcm.GetTransportProtocol()
			ap := tps[tp]
			if ap == nil {
				ap = alpns{}
				tps[tp] = ap
			}
			for _, alpn := range orAny(fcm.GetApplicationProtocols()) {
				direct := ap[alpn]
				if direct == nil {
					direct = &lpm[*srcTypes]{}
					ap[alpn] = direct
				}
				for _, dsip := range directIPs {
					types := direct.slot(dsip, func() *srcTypes { return &srcTypes{} })
					if types[st] == nil {
						types[st] = &lpm[srcPorts]{}
					}
					for _, sip := range srcIPs {
						ports := types[st].slot(sip, func() srcPorts { return srcPorts{} })
						for _, sp := range srcPortList {
							if other, taken := ports[sp]; taken {
								return overlapError{other: other}
							}
							ports[sp] = idx
						}
					}
				}
			}
		}
	}
	return nil
}

// NeedsTLSInspection reports whether some chain matches on
// transport_protocol "tls", or has no transport_protocol but matches on
// server_names or application_protocols: Envoy then requires (and
// auto-injects) the tls_inspector listener filter.
func (m *Matcher) NeedsTLSInspection() bool { return m != nil && m.needsTLS }

// Match returns the index into the compiled chains of the chain selected for
// ci, DefaultChain when the default chain applies, or NoMatch.
func (m *Matcher) Match(ci *ConnInfo) int {
	if m == nil {
		return NoMatch
	}
	r := NoMatch
	if ci.DstAddr.IsValid() {
		if t, ok := m.ports[ci.DstAddr.Port()]; ok {
			// A port-specific subtree exists: never fall back to port 0.
			r = matchDstIP(t, ci)
			return m.orDefault(r)
		}
	}
	if t, ok := m.ports[0]; ok {
		r = matchDstIP(t, ci)
	}
	return m.orDefault(r)
}

func (m *Matcher) orDefault(r int) int {
	if r >= 0 {
		return r
	}
	if m.hasDefault {
		return DefaultChain
	}
	return NoMatch
}

// ipOf returns the unmapped IP of ap, or Envoy's fake address for non-IP.
func ipOf(ap netip.AddrPort) netip.Addr {
	if !ap.IsValid() {
		return fakeAddr
	}
	return ap.Addr().Unmap()
}

func matchDstIP(t *lpm[serverNames], ci *ConnInfo) int {
	sn, ok := t.lookup(ipOf(ci.DstAddr))
	if !ok {
		return NoMatch
	}
	return matchServerName(sn, ci)
}

func matchServerName(sn serverNames, ci *ConnInfo) int {
	name := ci.ServerName
	if tps, ok := sn[name]; ok {
		return matchTransport(tps, ci)
	}
	// Wildcards, longest suffix first: ".example.com", then ".com" for
	// "www.example.com". The first byte is skipped and a trailing "." is
	// never a candidate, as in Envoy.
	if len(name) > 1 {
		for pos := indexFrom(name, 1); pos >= 0 && pos < len(name)-1; pos = indexFrom(name, pos+1) {
			if tps, ok := sn[name[pos:]]; ok {
				return matchTransport(tps, ci)
			}
		}
	}
	if tps, ok := sn[""]; ok {
		return matchTransport(tps, ci)
	}
	return NoMatch
}

// indexFrom returns the index of the first '.' in s at or after from, or -1.
func indexFrom(s string, from int) int {
	if from >= len(s) {
		return -1
	}
	i := strings.IndexByte(s[from:], '.')
	if i < 0 {
		return -1
	}
	return from + i
}

func matchTransport(tps transports, ci *ConnInfo) int {
	if ap, ok := tps[ci.TransportProtocol]; ok {
		return matchALPN(ap, ci)
	}
	if ap, ok := tps[""]; ok {
		return matchALPN(ap, ci)
	}
	return NoMatch
}

func matchALPN(ap alpns, ci *ConnInfo) int {
	for _, p := range ci.ALPN {
		if d, ok := ap[p]; ok {
			return matchDirectSrc(d, ci)
		}
	}
	if d, ok := ap[""]; ok {
		return matchDirectSrc(d, ci)
	}
	return NoMatch
}

func matchDirectSrc(d *lpm[*srcTypes], ci *ConnInfo) int {
	direct := ci.DirectSrcAddr
	if !direct.IsValid() {
		direct = ci.SrcAddr
	}
	types, ok := d.lookup(ipOf(direct))
	if !ok {
		return NoMatch
	}
	local, external := types[listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK], types[listenerv3.FilterChainMatch_EXTERNAL]
	if local != nil || external != nil {
		if isSameIPOrLoopback(ci) {
			if local != nil {
				return matchSrc(local, ci)
			}
		} else if external != nil {
			return matchSrc(external, ci)
		}
	}
	if anyT := types[listenerv3.FilterChainMatch_ANY]; anyT != nil {
		return matchSrc(anyT, ci)
	}
	return NoMatch
}

// isSameIPOrLoopback mirrors Envoy's Network::Utility::isSameIpOrLoopback:
// a pipe peer, a loopback peer, or a peer whose IP equals the local IP.
func isSameIPOrLoopback(ci *ConnInfo) bool {
	if !ci.SrcAddr.IsValid() {
		return true
	}
	remote := ci.SrcAddr.Addr().Unmap()
	if remote.IsLoopback() {
		return true
	}
	return ci.DstAddr.IsValid() && ci.DstAddr.Addr().Unmap() == remote
}

func matchSrc(t *lpm[srcPorts], ci *ConnInfo) int {
	ports, ok := t.lookup(ipOf(ci.SrcAddr))
	if !ok {
		return NoMatch
	}
	var port uint32
	if ci.SrcAddr.IsValid() {
		port = uint32(ci.SrcAddr.Port())
	}
	if idx, ok := ports[port]; ok {
		return idx
	}
	if port != 0 {
		if idx, ok := ports[0]; ok {
			return idx
		}
	}
	return NoMatch
}

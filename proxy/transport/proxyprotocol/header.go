package proxyprotocol

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// v2Signature starts every PROXY protocol v2 header.
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// TLV is one PROXY protocol v2 type-length-value entry.
type TLV struct {
	Type  uint8
	Value []byte
}

// tlvHeaderLen is a TLV's type and length bytes.
const tlvHeaderLen = 3

// sameFamily returns src and dst in one address family, as a PROXY header
// needs: IPv4-mapped IPv6 addresses are unmapped, and when one is still
// IPv4 and the other IPv6 the IPv4 one is mapped into IPv6.
func sameFamily(src, dst netip.AddrPort) (netip.AddrPort, netip.AddrPort) {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if s.Is4() != d.Is4() {
		s, d = netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16())
	}
	return netip.AddrPortFrom(s, src.Port()), netip.AddrPortFrom(d, dst.Port())
}

// AppendV1 appends the v1 (text) header "PROXY TCP4|TCP6 src dst sport
// dport\r\n" (Envoy's generateV1Header).
func AppendV1(b []byte, src, dst netip.AddrPort) []byte {
	src, dst = sameFamily(src, dst)
	b = append(b, "PROXY "...)
	if src.Addr().Is4() {
		b = append(b, "TCP4 "...)
	} else {
		b = append(b, "TCP6 "...)
	}
	b = src.Addr().AppendTo(b)
	b = append(b, ' ')
	b = dst.Addr().AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, "\r\n"...)
}

// AppendV2Local appends the v2 LOCAL header with no addresses (AF_UNSPEC),
// Envoy's generateV2LocalHeader.
func AppendV2Local(b []byte) []byte {
	b = append(b, v2Signature...)
	return append(b, 0x20, 0, 0, 0)
}

// AppendV2 appends the v2 PROXY header over TCP with the TLVs, in order
// (Envoy's generateV2Header). TLVs that would make the header's length
// field pass 65535 are left out; skipped reports whether any was.
func AppendV2(b []byte, src, dst netip.AddrPort, tlvs []TLV) (_ []byte, skipped bool) {
	src, dst = sameFamily(src, dst)
	fam, addrLen := byte(0x11), 12 // AF_INET, STREAM; 2×4 + 2×2
	if !src.Addr().Is4() {
		fam, addrLen = 0x21, 36 // AF_INET6, STREAM; 2×16 + 2×2
	}
	ext := 0
	keep := make([]bool, len(tlvs))
	for i, t := range tlvs {
		if n := ext + tlvHeaderLen + len(t.Value); n <= 0xffff-addrLen {
			ext, keep[i] = n, true
		} else {
			skipped = true
		}
	}
	b = append(b, v2Signature...)
	b = append(b, 0x21, fam) // version 2, PROXY
	b = binary.BigEndian.AppendUint16(b, uint16(addrLen+ext))
	if src.Addr().Is4() {
		s, d := src.Addr().As4(), dst.Addr().As4()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	for i, t := range tlvs {
		if keep[i] {
			b = append(b, t.Type)
			b = binary.BigEndian.AppendUint16(b, uint16(len(t.Value)))
			b = append(b, t.Value...)
		}
	}
	return b, skipped
}

// Header is a parsed PROXY protocol header.
type Header struct {
	Version int  // 1 or 2
	Local   bool // v2 LOCAL command, or v1 UNKNOWN: no addresses
	// Src and Dst are the addresses carried; zero when Local.
	Src, Dst netip.AddrPort
	TLVs     []TLV
}

// ErrNotProxy is returned by Parse when the stream does not start with a
// PROXY protocol header.
var ErrNotProxy = errors.New("not a PROXY protocol header")

// Parse reads one PROXY protocol header (v1 or v2, TCP over IPv4 or IPv6,
// or LOCAL/UNKNOWN) from r, leaving what follows it in r.
func Parse(r *bufio.Reader) (Header, error) {
	p, err := r.Peek(len(v2Signature))
	if err == nil && bytes.Equal(p, v2Signature) {
		return parseV2(r)
	}
	p, err = r.Peek(6)
	if err != nil || string(p) != "PROXY " {
		return Header{}, ErrNotProxy
	}
	line, err := r.ReadString('\n')
	if err != nil || len(line) > 107 || !strings.HasSuffix(line, "\r\n") {
		return Header{}, fmt.Errorf("v1 header: bad line %q", line)
	}
	f := strings.Fields(strings.TrimSuffix(line, "\r\n"))
	if len(f) >= 2 && f[1] == "UNKNOWN" {
		return Header{Version: 1, Local: true}, nil
	}
	if len(f) != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
		return Header{}, fmt.Errorf("v1 header: bad fields %q", line)
	}
	src, err1 := netip.ParseAddrPort(joinHostPort(f[2], f[4]))
	dst, err2 := netip.ParseAddrPort(joinHostPort(f[3], f[5]))
	if err := errors.Join(err1, err2); err != nil {
		return Header{}, fmt.Errorf("v1 header: %w", err)
	}
	if src.Addr().Is4() != (f[1] == "TCP4") || dst.Addr().Is4() != (f[1] == "TCP4") {
		return Header{}, fmt.Errorf("v1 header: addresses not %s", f[1])
	}
	return Header{Version: 1, Src: src, Dst: dst}, nil
}

func joinHostPort(h, p string) string {
	if strings.Contains(h, ":") {
		return "[" + h + "]:" + p
	}
	return h + ":" + p
}

func parseV2(r *bufio.Reader) (Header, error) {
	var fixed [16]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Header{}, fmt.Errorf("v2 header: %w", err)
	}
	if fixed[12]>>4 != 2 {
		return Header{}, fmt.Errorf("v2 header: version %d", fixed[12]>>4)
	}
	body := make([]byte, binary.BigEndian.Uint16(fixed[14:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return Header{}, fmt.Errorf("v2 header: %w", err)
	}
	h := Header{Version: 2}
	switch fixed[12] & 0xf {
	case 0:
		h.Local = true
		return h, nil
	case 1:
	default:
		return Header{}, fmt.Errorf("v2 header: command %d", fixed[12]&0xf)
	}
	var n int
	switch fixed[13] {
	case 0x11:
		if len(body) < 12 {
			return Header{}, errors.New("v2 header: short IPv4 addresses")
		}
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:]))
		n = 12
	case 0x21:
		if len(body) < 36 {
			return Header{}, errors.New("v2 header: short IPv6 addresses")
		}
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[0:16])), binary.BigEndian.Uint16(body[32:]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[16:32])), binary.BigEndian.Uint16(body[34:]))
		n = 36
	default:
		return Header{}, fmt.Errorf("v2 header: family/protocol %#x", fixed[13])
	}
	for rest := body[n:]; len(rest) > 0; {
		if len(rest) < tlvHeaderLen {
			return Header{}, errors.New("v2 header: short TLV")
		}
		l := int(binary.BigEndian.Uint16(rest[1:]))
		if len(rest) < tlvHeaderLen+l {
			return Header{}, errors.New("v2 header: TLV past the header")
		}
		h.TLVs = append(h.TLVs, TLV{Type: rest[0], Value: rest[tlvHeaderLen : tlvHeaderLen+l]})
		rest = rest[tlvHeaderLen+l:]
	}
	return h, nil
}

package proxyprotocol

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

func TestAppendV1(t *testing.T) {
	for _, tc := range []struct{ src, dst, want string }{
		{"1.2.3.4:5", "6.7.8.9:80", "PROXY TCP4 1.2.3.4 6.7.8.9 5 80\r\n"},
		{"[::1]:65535", "[fe80::1]:443", "PROXY TCP6 ::1 fe80::1 65535 443\r\n"},
		{"[::ffff:10.0.0.1]:1", "10.0.0.2:2", "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n"},
		{"10.0.0.1:1", "[::2]:2", "PROXY TCP6 ::ffff:10.0.0.1 ::2 1 2\r\n"},
	} {
		got := string(AppendV1(nil, netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst)))
		if got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.src, tc.dst, got, tc.want)
		}
	}
}

func TestAppendV2(t *testing.T) {
	sig := "0d0a0d0a000d0a515549540a"
	for _, tc := range []struct {
		name, src, dst string
		tlvs           []TLV
		want           string
	}{
		{"ipv4", "1.2.3.4:5", "6.7.8.9:80", nil, sig + "2111000c" + "01020304" + "06070809" + "0005" + "0050"},
		{"ipv4 tlvs", "1.2.3.4:5", "6.7.8.9:80", []TLV{{0xee, []byte("ab")}, {0x01, nil}},
			sig + "21110014" + "01020304" + "06070809" + "0005" + "0050" + "ee00026162" + "010000"},
		{"ipv6", "[::1]:1", "[::2]:2", nil, sig + "21210024" + strings.Repeat("00", 15) + "01" + strings.Repeat("00", 15) + "02" + "0001" + "0002"},
	} {
		got, skipped := AppendV2(nil, netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst), tc.tlvs)
		if h := hex.EncodeToString(got); h != tc.want || skipped {
			t.Errorf("%s: %s (skipped %v), want %s", tc.name, h, skipped, tc.want)
		}
	}
	if got := hex.EncodeToString(AppendV2Local(nil)); got != sig+"20000000" {
		t.Errorf("local: %s", got)
	}
}

// TestAppendV2TooLong: TLVs past the 65535-byte length are left out (the
// later ones that fit stay), as Envoy's proxy_protocol_remove_too_long_tlvs.
func TestAppendV2TooLong(t *testing.T) {
	big := TLV{0xe0, make([]byte, 0xffff-12-3)} // exactly fills the length
	b, skipped := AppendV2(nil, netip.MustParseAddrPort("1.1.1.1:1"), netip.MustParseAddrPort("2.2.2.2:2"),
		[]TLV{{0xe1, []byte("x")}, big, {0xe2, nil}})
	if !skipped {
		t.Fatal("nothing skipped")
	}
	h, err := Parse(bufio.NewReaderSize(bytes.NewReader(b), 1<<17))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.TLVs) != 2 || h.TLVs[0].Type != 0xe1 || h.TLVs[1].Type != 0xe2 {
		t.Fatalf("TLVs %v", h.TLVs)
	}
}

func TestParseRoundTrip(t *testing.T) {
	src, dst := netip.MustParseAddrPort("[2001:db8::1]:1234"), netip.MustParseAddrPort("[2001:db8::2]:80")
	v2, _ := AppendV2(nil, src, dst, []TLV{{0xef, []byte("v")}})
	for _, tc := range []struct {
		name string
		in   []byte
		want Header
	}{
		{"v1", AppendV1(nil, src, dst), Header{Version: 1, Src: src, Dst: dst}},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1, Local: true}},
		{"v2", v2, Header{Version: 2, Src: src, Dst: dst, TLVs: []TLV{{0xef, []byte("v")}}}},
		{"v2 local", AppendV2Local(nil), Header{Version: 2, Local: true}},
	} {
		r := bufio.NewReader(bytes.NewReader(append(tc.in, "rest"...)))
		h, err := Parse(r)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if h.Version != tc.want.Version || h.Local != tc.want.Local || h.Src != tc.want.Src || h.Dst != tc.want.Dst ||
			len(h.TLVs) != len(tc.want.TLVs) || (len(h.TLVs) > 0 && !bytes.Equal(h.TLVs[0].Value, tc.want.TLVs[0].Value)) {
			t.Errorf("%s: %+v, want %+v", tc.name, h, tc.want)
		}
		if rest, _ := r.ReadString(0); rest != "rest" {
			t.Errorf("%s: left %q", tc.name, rest)
		}
	}
	if _, err := Parse(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\n"))); err != ErrNotProxy {
		t.Errorf("HTTP: %v", err)
	}
}

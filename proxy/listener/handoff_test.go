package listener

import (
	"net/netip"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

func TestHandoffLookup(t *testing.T) {
	mk := func(name, network, addr string) *Listener {
		return &Listener{Name: name, network: network, address: addr}
	}
	ls := []*Listener{
		mk("virtualOutbound", "tcp", "0.0.0.0:15001"),
		mk("any80", "tcp", "0.0.0.0:80"),
		mk("exact80", "tcp", "198.18.0.10:80"),
		mk("dup80", "tcp", "198.18.0.10:80"),
		mk("v6any", "tcp", "[::]:9080"),
		mk("v6exact", "tcp", "[2001:db8::1]:443"),
		mk("pipe", "unix", "/tmp/x.sock"),
	}
	var tab Table
	tab.Set(ls)
	tests := []struct {
		dst  string
		want string // "" is none
	}{
		{"198.18.0.10:80", "exact80"},
		{"198.18.0.99:80", "any80"},
		{"[::ffff:198.18.0.99]:80", "any80"},
		{"10.0.0.1:15001", "virtualOutbound"},
		{"10.0.0.1:9080", ""}, // an IPv4 destination does not match [::]
		{"[2001:db8::2]:9080", "v6any"},
		{"[2001:db8::1]:443", "v6exact"},
		{"[2001:db8::2]:443", ""},
		{"198.18.0.10:81", ""},
	}
	for _, tt := range tests {
		t.Run(tt.dst, func(t *testing.T) {
			got := tab.Lookup(netip.MustParseAddrPort(tt.dst))
			name := ""
			if got != nil {
				name = got.Name
			}
			if name != tt.want {
				t.Errorf("Lookup(%s) = %q, want %q", tt.dst, name, tt.want)
			}
		})
	}
	var nilTab *Table
	if nilTab.Lookup(netip.MustParseAddrPort("1.2.3.4:80")) != nil {
		t.Error("nil table found a listener")
	}
	var empty Table
	if empty.Lookup(netip.MustParseAddrPort("1.2.3.4:80")) != nil {
		t.Error("empty table found a listener")
	}
}

func TestHandoffTarget(t *testing.T) {
	self := &Listener{Name: "virtualOutbound", network: "tcp", address: "0.0.0.0:15001", useOriginalDst: true}
	other := &Listener{Name: "0.0.0.0_80", network: "tcp", address: "0.0.0.0:80"}
	var tab Table
	tab.Set([]*Listener{self, other})
	self.UseHandoff(&tab)
	noUse := &Listener{Name: "plain", network: "tcp", address: "0.0.0.0:15002", handoff: &tab}
	tests := []struct {
		name     string
		l        *Listener
		dst      string
		restored bool
		want     *Listener
	}{
		{"restored to another listener", self, "198.18.0.10:80", true, other},
		{"not restored", self, "198.18.0.10:80", false, nil},
		{"restored to itself", self, "127.0.0.1:15001", true, nil},
		{"no listener for it", self, "198.18.0.11:9000", true, nil},
		{"without use_original_dst", noUse, "198.18.0.10:80", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := &streaminfo.Conn{LocalAddr: netip.MustParseAddrPort(tt.dst), LocalAddrRestored: tt.restored}
			if got := tt.l.handoffTarget(info); got != tt.want {
				t.Errorf("handoffTarget = %v, want %v", got, tt.want)
			}
		})
	}
}

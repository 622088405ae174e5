//go:build linux

package sockopt

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func sockAddr(addr string, port uint32, mut func(*corev3.SocketAddress)) *corev3.Address {
	sa := &corev3.SocketAddress{Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}
	if mut != nil {
		mut(sa)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: sa}}
}

func pipeAddr(path string, mode uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path, Mode: mode}}}
}

func TestAddrFromProto(t *testing.T) {
	tests := []struct {
		name        string
		in          *corev3.Address
		wantNet     string
		wantAddr    string
		wantErrPart string
	}{
		{"ipv4", sockAddr("127.0.0.1", 8080, nil), "tcp", "127.0.0.1:8080", ""},
		{"ipv6", sockAddr("::1", 443, nil), "tcp", "[::1]:443", ""},
		{"ipv6 any compat", sockAddr("::", 80, func(s *corev3.SocketAddress) { s.Ipv4Compat = true }), "tcp", "[::]:80", ""},
		{"port unset", &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "0.0.0.0"}}}, "tcp", "0.0.0.0:0", ""},
		{"builtin resolver", sockAddr("10.0.0.1", 1, func(s *corev3.SocketAddress) { s.ResolverName = "envoy.ip" }), "tcp", "10.0.0.1:1", ""},
		{"udp", sockAddr("127.0.0.1", 53, func(s *corev3.SocketAddress) { s.Protocol = corev3.SocketAddress_UDP }), "", "", "UDP listeners are not supported"},
		{"custom resolver", sockAddr("127.0.0.1", 1, func(s *corev3.SocketAddress) { s.ResolverName = "my.dns" }), "", "", "unknown address resolver: my.dns"},
		{"named port", sockAddr("127.0.0.1", 0, func(s *corev3.SocketAddress) {
			s.PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "http"}
		}), "", "", "socket_address.named_port"},
		{"hostname", sockAddr("localhost", 80, nil), "", "", "malformed IP address: localhost"},
		{"bad port", sockAddr("127.0.0.1", 70000, nil), "", "", "70000 is not a valid port"},
		{"netns", sockAddr("127.0.0.1", 1, func(s *corev3.SocketAddress) { s.NetworkNamespaceFilepath = "/run/netns/x" }), "", "", "network namespaces are not supported"},
		{"pipe", pipeAddr("/tmp/envoy.sock", 0o600), "unix", "/tmp/envoy.sock", ""},
		{"abstract pipe", pipeAddr("@envoy", 0), "unix", "@envoy", ""},
		{"abstract pipe with mode", pipeAddr("@envoy", 0o600), "", "", "cannot set mode for abstract AF_UNIX sockets"},
		{"empty pipe", pipeAddr("", 0), "", "", "pipe.path: empty"},
		{"internal", &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{}}}, "", "", "internal listeners are not supported"},
		{"nil", nil, "", "", "address: missing"},
		{"empty", &corev3.Address{}, "", "", "no address type set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, a, err := AddrFromProto(tt.in)
			if tt.wantErrPart != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrPart) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErrPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.wantNet || a != tt.wantAddr {
				t.Errorf("got (%q, %q), want (%q, %q)", n, a, tt.wantNet, tt.wantAddr)
			}
		})
	}
}

func TestOptionsFromListener(t *testing.T) {
	opt := &corev3.SocketOption{Level: 1, Name: 8, Value: &corev3.SocketOption_IntValue{IntValue: 4096}}
	ka := &corev3.TcpKeepalive{KeepaliveTime: wrapperspb.UInt32(10)}
	tests := []struct {
		name string
		l    *listenerv3.Listener
		want ListenOptions
	}{
		{"defaults", &listenerv3.Listener{Address: sockAddr("0.0.0.0", 80, nil)}, ListenOptions{ReusePort: true}},
		{"reuse port off", &listenerv3.Listener{EnableReusePort: wrapperspb.Bool(false)}, ListenOptions{}},
		{"pipe never reuses", &listenerv3.Listener{Address: pipeAddr("/tmp/x", 0o640)}, ListenOptions{PipeMode: 0o640}},
		{"everything", &listenerv3.Listener{
			Address:        sockAddr("::", 80, func(s *corev3.SocketAddress) { s.Ipv4Compat = true }),
			TcpBacklogSize: wrapperspb.UInt32(77),
			Freebind:       wrapperspb.Bool(true),
			Transparent:    wrapperspb.Bool(true),
			SocketOptions:  []*corev3.SocketOption{opt},
			TcpKeepalive:   ka,
		}, ListenOptions{ReusePort: true, Backlog: 77, Freebind: true, Transparent: true, IPv4Compat: true,
			SocketOptions: []*corev3.SocketOption{opt}, TCPKeepalive: ka}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := OptionsFromListener(tt.l)
			if got.ReusePort != tt.want.ReusePort || got.Backlog != tt.want.Backlog ||
				got.Freebind != tt.want.Freebind || got.Transparent != tt.want.Transparent ||
				got.IPv4Compat != tt.want.IPv4Compat || got.PipeMode != tt.want.PipeMode ||
				got.TCPKeepalive != tt.want.TCPKeepalive || len(got.SocketOptions) != len(tt.want.SocketOptions) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			for i := range got.SocketOptions {
				if got.SocketOptions[i] != tt.want.SocketOptions[i] {
					t.Errorf("SocketOptions[%d] differs", i)
				}
			}
		})
	}
}

func TestTCPNetwork(t *testing.T) {
	tests := []struct {
		network, address string
		compat           bool
		want             string
	}{
		{"tcp", "0.0.0.0:80", false, "tcp4"},
		{"tcp", "127.0.0.1:0", true, "tcp4"},
		{"tcp", "[::]:80", false, "tcp6"},
		{"tcp", "[::]:80", true, "tcp"},
		{"tcp6", "[::1]:80", true, "tcp"},
		{"tcp", "localhost:80", false, "tcp"},
		{"tcp4", "bad", false, "tcp4"},
	}
	for _, tt := range tests {
		if got := tcpNetwork(tt.network, tt.address, tt.compat); got != tt.want {
			t.Errorf("tcpNetwork(%q, %q, %v) = %q, want %q", tt.network, tt.address, tt.compat, got, tt.want)
		}
	}
}

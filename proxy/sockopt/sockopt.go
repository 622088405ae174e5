//go:build linux

// Package sockopt creates listening sockets the way Envoy does for an
// envoy.config.listener.v3.Listener: address resolution, SO_REUSEPORT,
// backlog, freebind, transparent, keepalive and generic socket_options
// applied in their PREBIND, BOUND and LISTENING states.
// Errors keep the net package's shape ("listen tcp 127.0.0.1:80: bind:
// address already in use") so they can be matched with errors.Is. The
// package is Linux-only, like the socket options it implements.
package sockopt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
)

// ListenOptions are the socket settings of one listener. The zero value is a
// plain listener: no SO_REUSEPORT, system backlog, no extra options.
type ListenOptions struct {
	// ReusePort sets SO_REUSEPORT before bind (Envoy's enable_reuse_port,
	// true by default on Linux; always false for pipes).
	ReusePort bool
	// Backlog is tcp_backlog_size; 0 keeps the system default (somaxconn).
	Backlog int
	// Freebind sets IP_FREEBIND (IPV6_FREEBIND on IPv6 sockets) before bind.
	Freebind bool
	// Transparent sets IP_TRANSPARENT (IPV6_TRANSPARENT) before bind; it
	// needs CAP_NET_ADMIN.
	Transparent bool
	// TCPKeepalive is the listener's tcp_keepalive: SO_KEEPALIVE and the
	// TCP_KEEP* values are set before bind and inherited by accepted
	// connections. Nil leaves keepalive off, as Envoy does.
	TCPKeepalive *corev3.TcpKeepalive
	// SocketOptions are applied in their state: STATE_PREBIND before bind,
	// STATE_BOUND and STATE_LISTENING after listen (see Listen).
	SocketOptions []*corev3.SocketOption
	// IPv4Compat makes a "::" listener dual-stack (IPV6_V6ONLY off), as
	// socket_address.ipv4_compat; otherwise IPv6 listeners are IPv6-only.
	IPv4Compat bool
	// PipeMode is pipe.mode, applied to the socket file after bind; 0 leaves
	// the mode from the umask. Invalid for abstract sockets.
	PipeMode os.FileMode
}

// OptionsFromListener extracts the socket settings of l. It does not
// validate; Listen reports invalid combinations.
func OptionsFromListener(l *listenerv3.Listener) ListenOptions {
	o := ListenOptions{
		Backlog:       int(l.GetTcpBacklogSize().GetValue()),
		Freebind:      l.GetFreebind().GetValue(),
		Transparent:   l.GetTransparent().GetValue(),
		TCPKeepalive:  l.GetTcpKeepalive(),
		SocketOptions: l.GetSocketOptions(),
		IPv4Compat:    l.GetAddress().GetSocketAddress().GetIpv4Compat(),
		PipeMode:      os.FileMode(l.GetAddress().GetPipe().GetMode()),
	}
	// enable_reuse_port wins; otherwise Envoy's default (true on Linux, so
	// the deprecated reuse_port cannot change it). Pipes share one socket.
	o.ReusePort = true
	if v := l.GetEnableReusePort(); v != nil {
		o.ReusePort = v.GetValue()
	}
	if l.GetAddress().GetPipe() != nil {
		o.ReusePort = false
	}
	return o
}

// AddrFromProto converts a listener address to a network and address for
// Listen: socket_address gives "tcp" and "host:port"; pipe gives
// "unix" and the path (a leading '@' selects the Linux abstract namespace,
// as in Envoy). UDP, internal addresses, custom resolvers, named ports and
// network namespaces are rejected.
func AddrFromProto(a *corev3.Address) (network, address string, err error) {
	switch {
	case a == nil:
		return "", "", errors.New("address: missing")
	case a.GetSocketAddress() != nil:
		sa := a.GetSocketAddress()
		if sa.GetProtocol() == corev3.SocketAddress_UDP {
			return "", "", errors.New("socket_address: UDP listeners are not supported")
		}
		if r := sa.GetResolverName(); r != "" && r != "envoy.ip" {
			return "", "", fmt.Errorf("socket_address.resolver_name: unknown address resolver: %s", r)
		}
		if sa.GetNetworkNamespaceFilepath() != "" {
			return "", "", errors.New("socket_address.network_namespace_filepath: network namespaces are not supported")
		}
		if _, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_NamedPort); ok {
			return "", "", fmt.Errorf("socket_address.named_port: IP resolver can't handle named port %q", sa.GetNamedPort())
		}
		port := sa.GetPortValue()
		if port > 65535 {
			return "", "", fmt.Errorf("socket_address.port_value: %d is not a valid port", port)
		}
		ip, perr := netip.ParseAddr(sa.GetAddress())
		if perr != nil {
			return "", "", fmt.Errorf("socket_address.address: malformed IP address: %s", sa.GetAddress())
		}
		return "tcp", netip.AddrPortFrom(ip, uint16(port)).String(), nil
	case a.GetPipe() != nil:
		p := a.GetPipe().GetPath()
		if p == "" {
			return "", "", errors.New("pipe.path: empty")
		}
		if strings.HasPrefix(p, "@") && a.GetPipe().GetMode() != 0 {
			return "", "", errors.New("pipe.mode: cannot set mode for abstract AF_UNIX sockets")
		}
		return "unix", p, nil
	case a.GetEnvoyInternalAddress() != nil:
		return "", "", errors.New("envoy_internal_address: internal listeners are not supported")
	default:
		return "", "", errors.New("address: no address type set")
	}
}

// Listen creates a listening socket on network ("tcp", "tcp4", "tcp6" or
// "unix") and address with opts. TCP listeners get SO_REUSEADDR (as Envoy)
// and accepted connections get TCP_NODELAY and no keepalive unless
// TCPKeepalive is set. IPv6 addresses listen IPv6-only unless
// opts.IPv4Compat. Because Go binds and listens in one step, STATE_BOUND
// options are applied right after listen(), before STATE_LISTENING ones.
// A stale unix socket file at the path is removed before bind, as Envoy does.
func Listen(ctx context.Context, network, address string, opts ListenOptions) (net.Listener, error) {
	reqNetwork := network
	isUnix := false
	switch network {
	case "tcp", "tcp4", "tcp6":
		network = tcpNetwork(network, address, opts.IPv4Compat)
	case "unix":
		isUnix = true
		if strings.HasPrefix(address, "@") {
			if opts.PipeMode != 0 {
				return nil, opError(network, address, errors.New("cannot set mode for abstract AF_UNIX sockets"))
			}
		} else if fi, err := os.Lstat(address); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(address) // stale socket from a previous run; errors surface at bind
		}
	default:
		return nil, opError(network, address, fmt.Errorf("unsupported network %q", network))
	}
	if isUnix && (opts.Freebind || opts.Transparent) {
		return nil, opError(network, address, errors.New("freebind and transparent need an IP listener"))
	}

	lc := net.ListenConfig{
		KeepAlive: -1, // Envoy leaves keepalive off unless configured
		Control: func(cnet, _ string, c syscall.RawConn) error {
			return control(c, func(fd int) error { return prebind(fd, familyOf(cnet), opts) })
		},
	}
	ln, err := lc.Listen(ctx, network, address)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			oe.Net = reqNetwork // report the network the caller asked for
		}
		return nil, err
	}
	if err := postListen(ln, opts); err != nil {
		ln.Close()
		return nil, opError(reqNetwork, address, err)
	}
	if isUnix && opts.PipeMode != 0 {
		if err := os.Chmod(address, opts.PipeMode); err != nil {
			ln.Close()
			return nil, opError(reqNetwork, address, err)
		}
	}
	return ln, nil
}

// tcpNetwork picks the Go network that gives Envoy's socket for an IP
// literal: AF_INET for IPv4 (Go would make "tcp" on 0.0.0.0 dual-stack),
// AF_INET6 with IPV6_V6ONLY for IPv6, or without it under ipv4_compat.
// Host names are left to the net package.
func tcpNetwork(network, address string, ipv4Compat bool) string {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return network
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return network
	case ip.Is4():
		return "tcp4"
	case ipv4Compat:
		return "tcp" // Go sets IPV6_V6ONLY=0 for IPv6 addresses on "tcp"
	default:
		return "tcp6"
	}
}

// family is the IP version of a socket; famNone for unix sockets.
type family int

const (
	famNone family = iota
	famV4
	famV6
)

func familyOf(network string) family {
	switch {
	case strings.HasSuffix(network, "4"):
		return famV4
	case strings.HasSuffix(network, "6"):
		return famV6
	}
	return famNone
}

// control runs f on the raw socket and returns f's error.
func control(c syscall.RawConn, f func(fd int) error) error {
	var ferr error
	if err := c.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// postListen applies what must follow listen(): STATE_BOUND options, the
// backlog and STATE_LISTENING options.
func postListen(ln net.Listener, opts ListenOptions) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return fmt.Errorf("listener %T has no raw socket", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return control(rc, func(fd int) error {
		fam := socketFamily(fd)
		if err := applyOptions(fd, fam, opts.SocketOptions, corev3.SocketOption_STATE_BOUND); err != nil {
			return err
		}
		if opts.Backlog > 0 {
			// Linux accepts listen() again on a listening socket and only
			// updates the accept queue length.
			if err := syscall.Listen(fd, opts.Backlog); err != nil {
				return os.NewSyscallError("listen", err)
			}
		}
		return applyOptions(fd, fam, opts.SocketOptions, corev3.SocketOption_STATE_LISTENING)
	})
}

// socketFamily returns the IP version of fd's local address.
func socketFamily(fd int) family {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return famNone
	}
	switch sa.(type) {
	case *syscall.SockaddrInet4:
		return famV4
	case *syscall.SockaddrInet6:
		return famV6
	}
	return famNone
}

// prebind applies the options Envoy sets before bind().
func prebind(fd int, fam family, opts ListenOptions) error {
	if opts.ReusePort && fam != famNone {
		if err := setInt(fd, syscall.SOL_SOCKET, soReusePort, 1, "SO_REUSEPORT"); err != nil {
			return err
		}
	}
	if opts.Freebind {
		if err := setFamilyAware(fd, fam, ipFreebind, ipv6Freebind, "IP_FREEBIND"); err != nil {
			return err
		}
	}
	if opts.Transparent {
		if err := setFamilyAware(fd, fam, ipTransparent, ipv6Transparent, "IP_TRANSPARENT"); err != nil {
			return err
		}
	}
	if ka := opts.TCPKeepalive; ka != nil && fam != famNone {
		if err := setKeepalive(fd, ka); err != nil {
			return err
		}
	}
	return applyOptions(fd, fam, opts.SocketOptions, corev3.SocketOption_STATE_PREBIND)
}

// setFamilyAware sets an IP-level boolean option: the IPv6 variant on IPv6
// sockets (falling back to the IPv4 one if the kernel lacks it), as Envoy's
// AddrFamilyAwareSocketOptionImpl.
func setFamilyAware(fd int, fam family, v4, v6 int, name string) error {
	switch fam {
	case famV4:
		return setInt(fd, syscall.IPPROTO_IP, v4, 1, name)
	case famV6:
		err := setInt(fd, syscall.IPPROTO_IPV6, v6, 1, strings.Replace(name, "IP_", "IPV6_", 1))
		if errors.Is(err, syscall.ENOPROTOOPT) {
			return setInt(fd, syscall.IPPROTO_IP, v4, 1, name)
		}
		return err
	}
	return fmt.Errorf("setsockopt %s: not an IP socket", name)
}

// setKeepalive sets SO_KEEPALIVE and each configured TCP_KEEP* value.
func setKeepalive(fd int, ka *corev3.TcpKeepalive) error {
	if err := setInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1, "SO_KEEPALIVE"); err != nil {
		return err
	}
	if v := ka.GetKeepaliveProbes(); v != nil {
		if err := setInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, int(v.GetValue()), "TCP_KEEPCNT"); err != nil {
			return err
		}
	}
	if v := ka.GetKeepaliveTime(); v != nil {
		if err := setInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, int(v.GetValue()), "TCP_KEEPIDLE"); err != nil {
			return err
		}
	}
	if v := ka.GetKeepaliveInterval(); v != nil {
		if err := setInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, int(v.GetValue()), "TCP_KEEPINTVL"); err != nil {
			return err
		}
	}
	return nil
}

// applyOptions sets the generic socket options of the given state that apply
// to a stream socket of family fam.
func applyOptions(fd int, fam family, list []*corev3.SocketOption, state corev3.SocketOption_SocketState) error {
	for i, o := range list {
		if o.GetState() != state {
			continue
		}
		if t := o.GetType(); t != nil && t.GetStream() == nil && t.GetDatagram() != nil {
			continue // datagram-only option
		}
		switch o.GetIpVersion() {
		case corev3.SocketOption_SOCKET_IP_VERSION_IPV4:
			if fam != famV4 {
				continue
			}
		case corev3.SocketOption_SOCKET_IP_VERSION_IPV6:
			if fam != famV6 {
				continue
			}
		}
		var err error
		switch v := o.GetValue().(type) {
		case *corev3.SocketOption_IntValue:
			err = syscall.SetsockoptInt(fd, int(o.GetLevel()), int(o.GetName()), int(v.IntValue))
		case *corev3.SocketOption_BufValue:
			err = syscall.SetsockoptString(fd, int(o.GetLevel()), int(o.GetName()), string(v.BufValue))
		default:
			err = errors.New("no int_value or buf_value")
		}
		if err != nil {
			return fmt.Errorf("socket_options[%d] (%q level=%d name=%d %s): setsockopt: %w",
				i, o.GetDescription(), o.GetLevel(), o.GetName(), state, err)
		}
	}
	return nil
}

func setInt(fd, level, opt, value int, name string) error {
	if err := syscall.SetsockoptInt(fd, level, opt, value); err != nil {
		return fmt.Errorf("setsockopt %s: %w", name, err)
	}
	return nil
}

// opError shapes err like the net package's listen errors.
func opError(network, address string, err error) error {
	return &net.OpError{Op: "listen", Net: network, Addr: strAddr{network, address}, Err: err}
}

// strAddr is a net.Addr for an address that was never resolved.
type strAddr struct{ network, address string }

func (a strAddr) Network() string { return a.network }
func (a strAddr) String() string  { return a.address }

//go:build linux

package sockopt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// getInt reads an integer socket option of c.
func getInt(t *testing.T, c any, level, opt int) int {
	t.Helper()
	var v int
	err := rawFD(t, c, func(fd int) error {
		var err error
		v, err = syscall.GetsockoptInt(fd, level, opt)
		return err
	})
	if err != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, opt, err)
	}
	return v
}

func rawFD(t *testing.T, c any, f func(fd int) error) error {
	t.Helper()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("%T is not a syscall.Conn", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return control(rc, f)
}

func listen(t *testing.T, network, address string, opts ListenOptions) net.Listener {
	t.Helper()
	ln, err := Listen(context.Background(), network, address, opts)
	if err != nil {
		t.Fatalf("Listen(%s, %s): %v", network, address, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func ipv6Available(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("IPv6 loopback unavailable: %v", err)
	}
	ln.Close()
}

func TestListenReusePort(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			if host == "::1" {
				ipv6Available(t)
			}
			first := listen(t, "tcp", net.JoinHostPort(host, "0"), ListenOptions{ReusePort: true})
			addr := first.Addr().String()
			if got := getInt(t, first, syscall.SOL_SOCKET, soReusePort); got != 1 {
				t.Errorf("SO_REUSEPORT = %d, want 1", got)
			}
			// A second SO_REUSEPORT socket on the same port is allowed ...
			listen(t, "tcp", addr, ListenOptions{ReusePort: true})
			// ... one without it is not, and the error keeps the address.
			_, err := Listen(context.Background(), "tcp", addr, ListenOptions{})
			if !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("err = %v, want EADDRINUSE", err)
			}
			if want := fmt.Sprintf("listen tcp %s: bind: address already in use", addr); err.Error() != want {
				t.Errorf("err = %q, want %q", err, want)
			}
		})
	}
}

func TestListenWithoutReusePortConflicts(t *testing.T) {
	first := listen(t, "tcp", "127.0.0.1:0", ListenOptions{})
	if got := getInt(t, first, syscall.SOL_SOCKET, soReusePort); got != 0 {
		t.Errorf("SO_REUSEPORT = %d, want 0", got)
	}
	_, err := Listen(context.Background(), "tcp", first.Addr().String(), ListenOptions{ReusePort: true})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("err = %v, want EADDRINUSE", err)
	}
}

func intOpt(level, name int, v int64, state corev3.SocketOption_SocketState) *corev3.SocketOption {
	return &corev3.SocketOption{Level: int64(level), Name: int64(name), State: state, Value: &corev3.SocketOption_IntValue{IntValue: v}}
}

func TestListenSocketOptions(t *testing.T) {
	buf := make([]byte, 4)
	binary.NativeEndian.PutUint32(buf, 40000)
	opts := ListenOptions{SocketOptions: []*corev3.SocketOption{
		intOpt(syscall.SOL_SOCKET, syscall.SO_RCVBUF, 32768, corev3.SocketOption_STATE_PREBIND),
		{Level: syscall.SOL_SOCKET, Name: syscall.SO_SNDBUF, State: corev3.SocketOption_STATE_BOUND,
			Value: &corev3.SocketOption_BufValue{BufValue: buf}},
		intOpt(syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1, corev3.SocketOption_STATE_LISTENING),
		// Filtered out: would fail if applied.
		{Level: 9999, Name: 1, IpVersion: corev3.SocketOption_SOCKET_IP_VERSION_IPV6, Value: &corev3.SocketOption_IntValue{IntValue: 1}},
		{Level: 9999, Name: 1, Type: &corev3.SocketOption_SocketType{Datagram: &corev3.SocketOption_SocketType_Datagram{}},
			Value: &corev3.SocketOption_IntValue{IntValue: 1}},
	}}
	ln := listen(t, "tcp", "127.0.0.1:0", opts)
	// Linux doubles SO_RCVBUF/SO_SNDBUF values on set.
	if got := getInt(t, ln, syscall.SOL_SOCKET, syscall.SO_RCVBUF); got != 2*32768 {
		t.Errorf("SO_RCVBUF = %d, want %d", got, 2*32768)
	}
	if got := getInt(t, ln, syscall.SOL_SOCKET, syscall.SO_SNDBUF); got != 2*40000 {
		t.Errorf("SO_SNDBUF = %d, want %d", got, 2*40000)
	}
	if got := getInt(t, ln, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); got != 1 {
		t.Errorf("SO_KEEPALIVE = %d, want 1", got)
	}
}

func TestListenSocketOptionErrors(t *testing.T) {
	for _, state := range []corev3.SocketOption_SocketState{
		corev3.SocketOption_STATE_PREBIND, corev3.SocketOption_STATE_BOUND, corev3.SocketOption_STATE_LISTENING,
	} {
		t.Run(state.String(), func(t *testing.T) {
			bad := intOpt(syscall.IPPROTO_TCP, 9999, 1, state)
			bad.Description = "bogus"
			ln, err := Listen(context.Background(), "tcp", "127.0.0.1:0", ListenOptions{SocketOptions: []*corev3.SocketOption{bad}})
			if err == nil {
				ln.Close()
				t.Fatal("Listen succeeded with an invalid socket option")
			}
			if !errors.Is(err, syscall.ENOPROTOOPT) {
				t.Errorf("err = %v, want ENOPROTOOPT", err)
			}
			for _, want := range []string{"listen tcp 127.0.0.1:0", `socket_options[0] ("bogus"`, state.String()} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err %q does not contain %q", err, want)
				}
			}
		})
	}
}

// maxBacklog reads the accept queue limit of a listening socket
// (tcpi_sacked holds sk_max_ack_backlog for listeners).
func maxBacklog(t *testing.T, ln net.Listener) uint32 {
	var info syscall.TCPInfo
	err := rawFD(t, ln, func(fd int) error {
		l := uint32(unsafe.Sizeof(info))
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_INFO,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		t.Fatalf("TCP_INFO: %v", err)
	}
	return info.Sacked
}

func TestListenBacklog(t *testing.T) {
	ln := listen(t, "tcp", "127.0.0.1:0", ListenOptions{Backlog: 7})
	if got := maxBacklog(t, ln); got != 7 {
		t.Errorf("backlog = %d, want 7", got)
	}
	def := listen(t, "tcp", "127.0.0.1:0", ListenOptions{})
	if got := maxBacklog(t, def); got == 7 || got == 0 {
		t.Errorf("default backlog = %d, want the system default", got)
	}
}

func TestListenFreebind(t *testing.T) {
	ln := listen(t, "tcp", "127.0.0.1:0", ListenOptions{Freebind: true})
	if got := getInt(t, ln, syscall.IPPROTO_IP, ipFreebind); got != 1 {
		t.Errorf("IP_FREEBIND = %d, want 1", got)
	}
	plain := listen(t, "tcp", "127.0.0.1:0", ListenOptions{})
	if got := getInt(t, plain, syscall.IPPROTO_IP, ipFreebind); got != 0 {
		t.Errorf("IP_FREEBIND without option = %d, want 0", got)
	}
	t.Run("ipv6", func(t *testing.T) {
		ipv6Available(t)
		ln := listen(t, "tcp", "[::1]:0", ListenOptions{Freebind: true})
		if got := getInt(t, ln, syscall.IPPROTO_IPV6, ipv6Freebind); got != 1 {
			t.Errorf("IPV6_FREEBIND = %d, want 1", got)
		}
	})
}

func TestListenTransparent(t *testing.T) {
	ln, err := Listen(context.Background(), "tcp", "127.0.0.1:0", ListenOptions{Transparent: true})
	if errors.Is(err, syscall.EPERM) {
		if !strings.Contains(err.Error(), "setsockopt IP_TRANSPARENT") {
			t.Errorf("err %q does not name IP_TRANSPARENT", err)
		}
		t.Skip("IP_TRANSPARENT needs CAP_NET_ADMIN")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := getInt(t, ln, syscall.IPPROTO_IP, ipTransparent); got != 1 {
		t.Errorf("IP_TRANSPARENT = %d, want 1", got)
	}
}

func TestListenIPv4Compat(t *testing.T) {
	ipv6Available(t)
	for _, compat := range []bool{false, true} {
		ln := listen(t, "tcp", "[::1]:0", ListenOptions{IPv4Compat: compat})
		want := 1
		if compat {
			want = 0
		}
		if got := getInt(t, ln, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY); got != want {
			t.Errorf("IPv4Compat=%v: IPV6_V6ONLY = %d, want %d", compat, got, want)
		}
	}
}

func TestListenIPv4IsNotDualStack(t *testing.T) {
	ln := listen(t, "tcp", "127.0.0.1:0", ListenOptions{})
	if fam := socketFamilyOf(t, ln); fam != famV4 {
		t.Errorf("family = %v, want IPv4", fam)
	}
}

func socketFamilyOf(t *testing.T, c any) family {
	var fam family
	rawFD(t, c, func(fd int) error { fam = socketFamily(fd); return nil })
	return fam
}

// acceptOne dials ln and returns the client and the accepted server side.
func acceptOne(t *testing.T, ln net.Listener) (client, server net.Conn) {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err := net.DialTimeout(ln.Addr().Network(), ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return client, r.c
	case <-time.After(5 * time.Second):
		t.Fatal("accept timed out")
	}
	return nil, nil
}

func TestAcceptedConnKeepalive(t *testing.T) {
	// Envoy leaves keepalive off on accepted connections unless configured.
	ln := listen(t, "tcp", "127.0.0.1:0", ListenOptions{})
	_, srv := acceptOne(t, ln)
	if got := getInt(t, srv, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); got != 0 {
		t.Errorf("accepted SO_KEEPALIVE = %d, want 0", got)
	}
	// Listener tcp_keepalive is inherited by accepted connections.
	ka := listen(t, "tcp", "127.0.0.1:0", ListenOptions{TCPKeepalive: &corev3.TcpKeepalive{
		KeepaliveTime: wrapperspb.UInt32(42), KeepaliveProbes: wrapperspb.UInt32(4),
	}})
	_, srv = acceptOne(t, ka)
	for _, c := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 42},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 4},
	} {
		if got := getInt(t, srv, c.level, c.opt); got != c.want {
			t.Errorf("accepted %s = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestApplyConnOptions(t *testing.T) {
	ln := listen(t, "tcp", "127.0.0.1:0", ListenOptions{})
	cli, _ := acceptOne(t, ln)
	tc := cli.(*net.TCPConn)
	if err := tc.SetNoDelay(false); err != nil {
		t.Fatal(err)
	}
	if err := ApplyConnOptions(tc, nil); err != nil {
		t.Fatal(err)
	}
	if got := getInt(t, tc, syscall.IPPROTO_TCP, syscall.TCP_NODELAY); got != 1 {
		t.Errorf("TCP_NODELAY = %d, want 1", got)
	}
	idleBefore := getInt(t, tc, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
	err := ApplyConnOptions(tc, &corev3.TcpKeepalive{
		KeepaliveProbes: wrapperspb.UInt32(3), KeepaliveInterval: wrapperspb.UInt32(5),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 3},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 5},
		{"TCP_KEEPIDLE (unset keeps the default)", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, idleBefore},
	} {
		if got := getInt(t, tc, c.level, c.opt); got != c.want {
			t.Errorf("%s = %d, want %d", c.name, got, c.want)
		}
	}
	if err := ApplyConnOptions(tc, &corev3.TcpKeepalive{KeepaliveTime: wrapperspb.UInt32(0)}); err == nil ||
		!strings.Contains(err.Error(), "tcp_keepalive: setsockopt TCP_KEEPIDLE") {
		t.Errorf("keepalive_time 0: err = %v, want TCP_KEEPIDLE error", err)
	}
}

func TestListenPipe(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "listener.sock")
	ln := listen(t, "unix", path, ListenOptions{PipeMode: 0o600})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket file mode = %v, want socket 0600", fi.Mode())
	}
	acceptOne(t, ln)

	// A stale socket file left by a dead process is replaced.
	stale := filepath.Join(dir, "stale.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	acceptOne(t, listen(t, "unix", stale, ListenOptions{}))

	// A regular file is not removed: bind fails.
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(context.Background(), "unix", regular, ListenOptions{}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("listen on regular file: err = %v, want EADDRINUSE", err)
	}
	if _, err := os.Stat(regular); err != nil {
		t.Errorf("regular file was removed: %v", err)
	}

	// Freebind makes no sense on a pipe.
	if _, err := Listen(context.Background(), "unix", filepath.Join(dir, "fb.sock"), ListenOptions{Freebind: true}); err == nil ||
		!strings.Contains(err.Error(), "need an IP listener") {
		t.Errorf("freebind on pipe: err = %v", err)
	}
}

func TestListenAbstractPipe(t *testing.T) {
	name := fmt.Sprintf("@outrider-sockopt-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	ln := listen(t, "unix", name, ListenOptions{})
	acceptOne(t, ln)
	_, err := Listen(context.Background(), "unix", name+"-mode", ListenOptions{PipeMode: 0o600})
	if err == nil || !strings.Contains(err.Error(), "cannot set mode for abstract AF_UNIX sockets") {
		t.Errorf("abstract with mode: err = %v", err)
	}
}

func TestListenErrors(t *testing.T) {
	_, err := Listen(context.Background(), "udp", "127.0.0.1:0", ListenOptions{})
	if err == nil || err.Error() != `listen udp 127.0.0.1:0: unsupported network "udp"` {
		t.Errorf("udp: err = %v", err)
	}
	_, err = Listen(context.Background(), "tcp", "127.0.0.1:99999", ListenOptions{})
	if err == nil || !strings.Contains(err.Error(), "listen tcp") {
		t.Errorf("bad port: err = %v", err)
	}
}

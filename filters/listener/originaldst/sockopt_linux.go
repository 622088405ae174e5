package originaldst

import (
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h),
// the same value as SO_ORIGINAL_DST at level SOL_IPV6.
const ip6tSOOriginalDst = 80

// OriginalDst reads the connection's original destination from conntrack:
// SO_ORIGINAL_DST for IPv4 sockets, IP6T_SO_ORIGINAL_DST for IPv6 ones (v6).
func OriginalDst(c syscall.Conn, v6 bool) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var out netip.AddrPort
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		if v6 {
			var sa unix.RawSockaddrInet6
			n := uint32(unsafe.Sizeof(sa))
			serr = getsockopt(int(fd), unix.IPPROTO_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), &n)
			if serr == nil {
				port := netPort(&sa.Port)
				out = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
			}
			return
		}
		var sa unix.RawSockaddrInet4
		n := uint32(unsafe.Sizeof(sa))
		serr = getsockopt(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), &n)
		if serr == nil {
			port := netPort(&sa.Port)
			out = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)
		}
	})
	if cerr != nil {
		return netip.AddrPort{}, cerr
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt original destination: %w", serr)
	}
	return out, nil
}

func getsockopt(fd, level, opt int, p unsafe.Pointer, n *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(n)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// netPort reads a sockaddr port, stored in network byte order.
func netPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

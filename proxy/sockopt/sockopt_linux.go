//go:build linux

package sockopt

// Linux option numbers missing from package syscall.
const (
	soReusePort     = 0xf  // SO_REUSEPORT
	ipFreebind      = 0xf  // IP_FREEBIND
	ipTransparent   = 0x13 // IP_TRANSPARENT
	ipv6Freebind    = 78   // IPV6_FREEBIND (Linux 4.15+)
	ipv6Transparent = 75   // IPV6_TRANSPARENT
)

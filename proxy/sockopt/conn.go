//go:build linux

package sockopt

import (
	"fmt"
	"net"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// ApplyConnOptions sets what Envoy sets on every TCP connection it owns:
// TCP_NODELAY on, and, when keepalive is non-nil (a cluster's
// upstream_connection_options.tcp_keepalive), SO_KEEPALIVE with each
// configured TCP_KEEPCNT / TCP_KEEPIDLE / TCP_KEEPINTVL; unset values keep
// the system defaults. A nil keepalive leaves keepalive as it is.
func ApplyConnOptions(c *net.TCPConn, keepalive *corev3.TcpKeepalive) error {
	if err := c.SetNoDelay(true); err != nil {
		return fmt.Errorf("set TCP_NODELAY: %w", err)
	}
	if keepalive == nil {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("tcp_keepalive: %w", err)
	}
	if err := control(rc, func(fd int) error { return setKeepalive(fd, keepalive) }); err != nil {
		return fmt.Errorf("tcp_keepalive: %w", err)
	}
	return nil
}

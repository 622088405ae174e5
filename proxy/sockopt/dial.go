package sockopt

import (
	"syscall"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// DialControl returns a net.Dialer Control function for upstream sockets
// (a cluster's upstream_bind_config): before each socket connects it sets
// IP_FREEBIND when freebind is true, then the socket_options of state
// STATE_PREBIND and those of STATE_BOUND (Envoy sets the latter after bind;
// an upstream socket without a source address binds when it connects, so
// both come first here). It returns nil when there is nothing to set. A
// failing option fails the dial with an error naming its index.
func DialControl(freebind bool, opts []*corev3.SocketOption) func(network, address string, c syscall.RawConn) error {
	if !freebind && len(opts) == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		return control(c, func(fd int) error {
			fam := socketFamily(fd)
			if freebind {
				if err := setFamilyAware(fd, fam, ipFreebind, ipv6Freebind, "IP_FREEBIND"); err != nil {
					return err
				}
			}
			if err := applyOptions(fd, fam, opts, corev3.SocketOption_STATE_PREBIND); err != nil {
				return err
			}
			return applyOptions(fd, fam, opts, corev3.SocketOption_STATE_BOUND)
		})
	}
}

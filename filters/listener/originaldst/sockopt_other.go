//go:build !linux

package originaldst

import (
	"net/netip"
	"syscall"
)

// OriginalDst reports ErrUnsupported outside Linux.
func OriginalDst(syscall.Conn, bool) (netip.AddrPort, error) {
	return netip.AddrPort{}, ErrUnsupported
}

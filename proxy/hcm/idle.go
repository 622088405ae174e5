package hcm

import (
	"net"
	"syscall"

	"github.com/outrider-proxy/outrider/proxy/http1"
)

var _ http1.RawConner = (*sniffer)(nil)

// RawConn lets the HTTP/1 decoder wait for the next request on the socket
// itself, without a buffer, once the sniffer passes HTTP/1 bytes through
// unchanged; nil before that, or when the connection is not plain TCP.
func (s *sniffer) RawConn() syscall.RawConn {
	if s.state != 1 {
		return nil
	}
	tc, ok := s.r.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

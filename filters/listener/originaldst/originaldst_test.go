package originaldst

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// wrapped hides the socket behind a replaying wrapper, as listener filters
// that peek do.
type wrapped struct{ net.Conn }

func (w wrapped) Unwrap() net.Conn { return w.Conn }

// opaque hides it without Unwrap.
type opaque struct{ net.Conn }

// TestOnAcceptWithoutRedirect: a connection nothing redirected keeps its
// own local address (conntrack, when loaded, reports that same address),
// and a connection with no socket underneath is left alone. The redirected
// case runs in proxy/server's TestTransparentProxy.
func TestOnAcceptWithoutRedirect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tests := []struct {
		name string
		wrap func(net.Conn) net.Conn
		sock bool // OnAccept reaches the socket
	}{
		{"socket", func(c net.Conn) net.Conn { return c }, true},
		{"behind a replaying wrapper", func(c net.Conn) net.Conn { return wrapped{c} }, true},
		{"opaque", func(c net.Conn) net.Conn { return opaque{c} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			sc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			if got := syscallConn(tt.wrap(sc)) != nil; got != tt.sock {
				t.Fatalf("socket found = %v, want %v", got, tt.sock)
			}
			own := sc.LocalAddr().(*net.TCPAddr).AddrPort()
			info := &streaminfo.Conn{LocalAddr: own}
			c := tt.wrap(sc)
			if err := (Filter{}).OnAccept(&c, info); err != nil {
				t.Fatalf("OnAccept: %v", err)
			}
			if info.LocalAddr != own {
				t.Errorf("LocalAddr = %v, want the socket's own %v", info.LocalAddr, own)
			}
			if !tt.sock && info.LocalAddrRestored {
				t.Error("restored without a socket")
			}
		})
	}
	if _, err := OriginalDst(opaqueSyscall{}, false); err == nil {
		t.Error("OriginalDst on a failing SyscallConn: no error")
	}
}

type opaqueSyscall struct{}

func (opaqueSyscall) SyscallConn() (syscall.RawConn, error) { return nil, errNoSocket }

var errNoSocket = errors.New("no socket")

package sockopt

import (
	"net"
	"strings"
	"syscall"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestDialControl(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if DialControl(false, nil) != nil {
		t.Error("nothing to set: want a nil Control")
	}
	opt := func(state corev3.SocketOption_SocketState, level, name, v int64) *corev3.SocketOption {
		return &corev3.SocketOption{State: state, Level: level, Name: name, Value: &corev3.SocketOption_IntValue{IntValue: v}}
	}
	d := net.Dialer{Control: DialControl(true, []*corev3.SocketOption{
		opt(corev3.SocketOption_STATE_PREBIND, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1),
		opt(corev3.SocketOption_STATE_BOUND, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 65536),
		opt(corev3.SocketOption_STATE_LISTENING, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 8192), // not for upstream sockets
	})}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get := func(opt int) int {
		t.Helper()
		rc, _ := c.(*net.TCPConn).SyscallConn()
		var v int
		var gerr error
		rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, opt) })
		if gerr != nil {
			t.Fatal(gerr)
		}
		return v
	}
	if get(syscall.SO_KEEPALIVE) != 1 {
		t.Error("STATE_PREBIND SO_KEEPALIVE not set")
	}
	if v := get(syscall.SO_RCVBUF); v < 65536 { // the kernel doubles it
		t.Errorf("STATE_BOUND SO_RCVBUF = %d, want at least 65536", v)
	}
	var fb int
	rc, _ := c.(*net.TCPConn).SyscallConn()
	rc.Control(func(fd uintptr) { fb, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, ipFreebind) })
	if fb != 1 {
		t.Error("IP_FREEBIND not set")
	}

	bad := net.Dialer{Control: DialControl(false, []*corev3.SocketOption{opt(corev3.SocketOption_STATE_PREBIND, 12345, 1, 1)})}
	if _, err := bad.Dial("tcp", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "socket_options[0]") {
		t.Errorf("a failing option: %v, want an error naming socket_options[0]", err)
	}
}

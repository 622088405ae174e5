package upstream

import (
	"context"
	"strings"
	"syscall"
	"testing"
)

// upstream_bind_config.socket_options reach the cluster's upstream sockets.
func TestUpstreamBindSocketOptions(t *testing.T) {
	ls := newLineServer(t, 0)
	m, _ := newTestManager(t)
	js := strings.Replace(staticCluster("so", "ROUND_ROBIN", ls.addrPort().String()), `"lb_policy"`,
		`"upstream_bind_config":{"socket_options":[{"level":1,"name":9,"int_value":1,"state":"STATE_PREBIND"}]},"lb_policy"`, 1)
	c := mustAdd(t, m, js)
	uc, err := c.Dial(context.Background(), c.Hosts()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	rc, _ := uc.TCP().SyscallConn()
	var v int
	var gerr error
	rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) })
	if gerr != nil || v != 1 {
		t.Errorf("SO_KEEPALIVE = %d (%v), want 1 from upstream_bind_config.socket_options", v, gerr)
	}
}

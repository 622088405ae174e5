package upstream

import (
	"context"
	"fmt"
	"net"
)

// DialCluster connects to a host the named cluster's load balancer picks,
// through the transport socket (TLS) that host matches, for the proxy's own
// clients of a cluster: xDS REST polling, the gRPC access logger, tracers.
// The error names the cluster when it is gone or has no healthy host.
func (m *Manager) DialCluster(ctx context.Context, name string) (net.Conn, error) {
	cl := m.Get(name)
	if cl == nil {
		return nil, fmt.Errorf("cluster %q is gone", name)
	}
	h := cl.ChooseHost(&LBContext{})
	if h == nil {
		return nil, fmt.Errorf("cluster %q: no healthy upstream", name)
	}
	uc, err := cl.Dial(ctx, h)
	if err != nil {
		return nil, err
	}
	tr := cl.TransportFor(h)
	if tr == nil {
		return uc, nil
	}
	tc, err := tr.Wrap(ctx, uc, "")
	if err != nil {
		uc.Close()
		return nil, err
	}
	return tc, nil
}

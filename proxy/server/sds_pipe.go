package server

import (
	"context"
	"fmt"
	"net"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// pipeClusterPath is the unix socket path of a static cluster whose only
// endpoint is a pipe address, as Envoy+SPIRE bootstraps declare the SPIRE
// agent's socket (an envoy_grpc cluster for SDS); "" for any other cluster.
// Outrider uses such a cluster only as an xDS/SDS gRPC target: it is not
// added to the cluster manager, so routes cannot send requests to it.
func pipeClusterPath(c *clusterv3.Cluster) (string, error) {
	var path string
	n := 0
	for _, lle := range c.GetLoadAssignment().GetEndpoints() {
		for _, le := range lle.GetLbEndpoints() {
			n++
			if p := le.GetEndpoint().GetAddress().GetPipe(); p != nil {
				path = p.GetPath()
			}
		}
	}
	if path == "" {
		return "", nil
	}
	if n != 1 {
		return "", fmt.Errorf("load_assignment: a pipe cluster (SDS to a unix socket) needs exactly one endpoint, has %d", n)
	}
	if c.GetTransportSocket() != nil {
		return "", fmt.Errorf("transport_socket: not supported by outrider on a pipe cluster")
	}
	return path, nil
}

// pipeDialer dials the gRPC server of a pipe cluster over its unix socket.
func pipeDialer(path string) func(context.Context) (grpc.ClientConnInterface, error) {
	return func(context.Context) (grpc.ClientConnInterface, error) {
		return grpc.NewClient("passthrough:///"+path,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			}))
	}
}

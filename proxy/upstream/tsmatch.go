package upstream

import (
	"context"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outrider-proxy/outrider/proxy/transport"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// transportMatchKey is the endpoint metadata filter whose fields
// transport_socket_matches compare against.
const transportMatchKey = "envoy.transport_socket_match"

// socketMatch is one compiled transport_socket_matches entry: hosts whose
// endpoint metadata under envoy.transport_socket_match has every field of
// fields (with equal values) connect through transport.
type socketMatch struct {
	name      string
	fields    map[string]*structpb.Value // empty matches every host
	transport transport.Upstream         // nil: plaintext (raw_buffer)
	count     *stats.Counter             // cluster.<name>.<match>.total_match_count
}

// compileSocketMatches builds c's transport_socket_matches, in order; the
// cluster's own transport_socket stays the default for hosts no entry
// matches (cluster.<name>.default.total_match_count counts those).
func (m *Manager) compileSocketMatches(cfg *clusterv3.Cluster, c *Cluster) error {
	if len(cfg.GetTransportSocketMatches()) == 0 {
		return nil
	}
	for i, tm := range cfg.GetTransportSocketMatches() {
		sm := socketMatch{name: tm.GetName(), fields: tm.GetMatch().GetFields(),
			count: c.Stats.Scope().Counter(tm.GetName() + ".total_match_count")}
		if ts := tm.GetTransportSocket(); ts != nil {
			tr, err := m.compileTransport(ts, c)
			if err != nil {
				return fmt.Errorf("transport_socket_matches[%d] (%s).transport_socket: %w", i, tm.GetName(), err)
			}
			sm.transport = tr
		}
		x := c.extras()
		x.socketMatches = append(x.socketMatches, sm)
		x.perDownstreamMatch = x.perDownstreamMatch || perDownstream(sm.transport)
	}
	c.extras().defaultMatchCount = c.Stats.Scope().Counter("default.total_match_count")
	return nil
}

// TransportFor is the transport socket connections to h use: the first
// transport_socket_matches entry h's endpoint metadata matches, else the
// cluster's transport_socket. Nil means plaintext.
func (c *Cluster) TransportFor(h *Host) transport.Upstream {
	if len(c.x.socketMatches) == 0 {
		return c.transport
	}
	var md map[string]*structpb.Value
	if h != nil {
		md = h.Metadata.GetFilterMetadata()[transportMatchKey].GetFields()
	}
	for i := range c.x.socketMatches {
		sm := &c.x.socketMatches[i]
		if matchesFields(sm.fields, md) {
			sm.count.Inc()
			return sm.transport
		}
	}
	c.x.defaultMatchCount.Inc()
	return c.transport
}

// matchesFields reports whether every field of want is in have with an
// equal value.
func matchesFields(want, have map[string]*structpb.Value) bool {
	for k, v := range want {
		hv, ok := have[k]
		if !ok || !proto.Equal(v, hv) {
			return false
		}
	}
	return true
}

// downstreamKey is the transport.DownstreamKey of a request with pool
// context ctx when a transport of the cluster is per downstream connection
// (PROXY protocol), so that its pools share a connection only among
// requests of the same downstream addresses; zero otherwise.
func (c *Cluster) downstreamKey(ctx context.Context) transport.DownstreamKey {
	if !perDownstream(c.transport) && (c.x == nil || !c.x.perDownstreamMatch) {
		return transport.DownstreamKey{}
	}
	return transport.KeyOf(ctx)
}

func perDownstream(tr transport.Upstream) bool {
	_, ok := tr.(transport.PerDownstream)
	return ok
}

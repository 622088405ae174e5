// Package tcpproxy is Envoy's envoy.filters.network.tcp_proxy: it connects each
// downstream connection to a host of one cluster and moves bytes both ways,
// half-close included. Plain TCP on both sides is spliced in the kernel.
package tcpproxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/netcopy"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/transport"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/accesslog"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name.
const Name = "envoy.filters.network.tcp_proxy"

func init() {
	netfilter.Registry.Register(Name, []string{"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"}, newFilter)
}

// defaultIdleTimeout is Envoy's: one hour when idle_timeout is unset.
const defaultIdleTimeout = time.Hour

type weighted struct {
	name   string
	weight uint32
}

// filter is the compiled, immutable config shared by all connections.
type filter struct {
	clusters    *upstream.Manager
	cluster     string     // set unless weighted
	weighted    []weighted // weighted_clusters
	totalWeight uint32
	idle        time.Duration // 0: none
	attempts    int
	maxDuration time.Duration
	stats       *filterStats
	logs        *accesslog.Set // nil logs nothing
}

// Close flushes and releases the access logs.
func (f *filter) Close() error { return f.logs.Close() }

type filterStats struct {
	cxTotal, noRoute, rxBytes, txBytes, idleTimeout, maxDuration, connectAttemptsExceeded *stats.Counter
}

func newFilter(ctx *netfilter.Context, a *anypb.Any) (any, error) {
	cfg := &tcpv3.TcpProxy{}
	if err := a.UnmarshalTo(cfg); err != nil {
		return nil, fmt.Errorf("tcp_proxy: %w", err)
	}
	if err := confcheck.Fields(cfg, "", "stat_prefix", "cluster_specifier", "idle_timeout",
		"max_connect_attempts", "max_downstream_connection_duration", "access_log", "hash_policy"); err != nil {
		return nil, fmt.Errorf("tcp_proxy: %w", err)
	}
	logs, err := accesslog.Compile(cfg.GetAccessLog(), accesslog.Options{Stats: ctx.Stats, Log: ctx.Log, Clusters: ctx.Clusters})
	if err != nil {
		return nil, fmt.Errorf("tcp_proxy: %w", err)
	}
	f := &filter{clusters: ctx.Clusters, idle: defaultIdleTimeout, attempts: 1, logs: logs}
	switch {
	case cfg.GetWeightedClusters() != nil:
		for _, c := range cfg.GetWeightedClusters().GetClusters() {
			if c.GetMetadataMatch() != nil {
				return nil, fmt.Errorf("tcp_proxy: weighted_clusters.clusters[%q].metadata_match: field not supported by outrider yet", c.GetName())
			}
			f.weighted = append(f.weighted, weighted{c.GetName(), c.GetWeight()})
			f.totalWeight += c.GetWeight()
		}
	default:
		f.cluster = cfg.GetCluster()
	}
	if d := cfg.GetIdleTimeout(); d != nil {
		f.idle = d.AsDuration()
	}
	if n := cfg.GetMaxConnectAttempts(); n != nil {
		f.attempts = int(n.GetValue())
	}
	if d := cfg.GetMaxDownstreamConnectionDuration(); d != nil {
		f.maxDuration = d.AsDuration()
	}
	s := ctx.Stats.Scope("tcp." + cfg.GetStatPrefix())
	f.stats = &filterStats{
		cxTotal:                 s.Counter("downstream_cx_total"),
		noRoute:                 s.Counter("downstream_cx_no_route"),
		rxBytes:                 s.Counter("downstream_cx_rx_bytes_total"),
		txBytes:                 s.Counter("downstream_cx_tx_bytes_total"),
		idleTimeout:             s.Counter("idle_timeout"),
		maxDuration:             s.Counter("max_downstream_connection_duration"),
		connectAttemptsExceeded: s.Counter("upstream_connect_attempts_exceeded"),
	}
	s.Counter("upstream_flush_total")
	s.Gauge("upstream_flush_active")
	s.Counter("downstream_flow_control_paused_reading_total")
	s.Counter("downstream_flow_control_resumed_reading_total")
	return f, nil
}

func (f *filter) pickCluster() string {
	if f.cluster != "" || f.totalWeight == 0 {
		return f.cluster
	}
	r := rand.Uint32N(f.totalWeight)
	for _, w := range f.weighted {
		if r < w.weight {
			return w.name
		}
		r -= w.weight
	}
	return f.weighted[len(f.weighted)-1].name
}

// ServeConn implements netfilter.Terminal.
func (f *filter) ServeConn(c *netfilter.Conn) {
	defer c.Close()
	f.stats.cxTotal.Inc()
	var info *streaminfo.Stream
	if f.logs != nil {
		info = &streaminfo.Stream{Conn: c.Info, StartTime: c.Info.StartTime}
		defer func() {
			info.LastDownstreamTxByte = info.Since(time.Now())
			f.logs.Log(&formatter.Context{Stream: info, LogType: accesslogdatav3.AccessLogType_TcpConnectionEnd})
		}()
	}
	name := f.pickCluster()
	cl := f.clusters.Get(name)
	if info != nil {
		info.UpstreamCluster = name
	}
	if cl == nil {
		f.stats.noRoute.Inc()
		if info != nil {
			info.SetFlag(streaminfo.NoClusterFound)
		}
		return
	}
	up, err := f.connect(cl, c)
	if err != nil {
		if info != nil {
			info.SetFlag(streaminfo.UpstreamConnectionFailure)
		}
		return
	}
	defer up.Close()
	// close_connections_on_host_health_failure: both sides close when the
	// host turns unhealthy.
	defer up.Host().CloseOnHealthFailure(func() { _ = c.Close(); _ = up.Close() })()
	if info != nil {
		info.UpstreamHost = up.Host().Addr
		if a, ok := up.LocalAddr().(*net.TCPAddr); ok {
			info.UpstreamLocalAddr = a.String()
		}
	}
	rx, tx := f.pump(c, up)
	if info != nil {
		info.BytesReceived, info.BytesSent = uint64(rx), uint64(tx)
	}
}

func (f *filter) connect(cl *upstream.Cluster, c *netfilter.Conn) (*upstream.UpstreamConn, error) {
	var lastErr error
	for i := 0; i < max(f.attempts, 1); i++ {
		h := cl.ChooseHost(&upstream.LBContext{DownstreamConn: c.Info})
		if h == nil {
			cl.Stats.UpstreamCxNoneHealthy().Inc()
			return nil, fmt.Errorf("cluster %q: no healthy upstream", cl.Name)
		}
		up, err := cl.Dial(context.Background(), h)
		if err == nil {
			return up, nil
		}
		lastErr = err
	}
	f.stats.connectAttemptsExceeded.Inc()
	return nil, lastErr
}

// pump copies both ways until both directions end, honouring idle_timeout and
// max_downstream_connection_duration by closing both sides.
func (f *filter) pump(down *netfilter.Conn, up *upstream.UpstreamConn) (rx, tx int64) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var closeOnce sync.Once
	closeBoth := func() {
		closeOnce.Do(func() { _ = down.Close(); _ = up.Close() })
	}
	if f.idle > 0 {
		var t *time.Timer
		t = time.AfterFunc(f.idle, func() {
			idleFor := time.Since(time.Unix(0, last.Load()))
			if idleFor >= f.idle {
				f.stats.idleTimeout.Inc()
				closeBoth()
				return
			}
			t.Reset(f.idle - idleFor)
		})
		defer t.Stop()
	}
	if f.maxDuration > 0 {
		t := time.AfterFunc(f.maxDuration, func() { f.stats.maxDuration.Inc(); closeBoth() })
		defer t.Stop()
	}
	rxf := func(n int) {
		f.stats.rxBytes.Add(uint64(n))
		up.AddTxBytes(int64(n))
		last.Store(time.Now().UnixNano())
	}
	txf := func(n int) {
		f.stats.txBytes.Add(uint64(n))
		up.AddRxBytes(int64(n))
		last.Store(time.Now().UnixNano())
	}
	var upConn net.Conn = up
	if t := up.TCP(); t != nil {
		upConn = t // plain TCP: splice, counting bytes through rx and tx
	}
	if tr := up.Cluster().TransportFor(up.Host()); tr != nil {
		// The downstream connection goes with the dial (the PROXY protocol
		// header carries its addresses).
		wrapped, err := tr.Wrap(transport.WithDownstream(context.Background(), down.Info), up, "")
		if err != nil {
			closeBoth()
			return 0, 0
		}
		if wrapped != net.Conn(up) { // a transport that only wrote a header keeps the splice
			upConn = wrapped // TLS to the upstream: copied through a buffer
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if tx, err = netcopy.Copy(down.Conn, upConn, txf); err != nil {
			closeBoth()
			return
		}
		netcopy.CloseWrite(down.Conn)
	}()
	var err error
	if rx, err = netcopy.Copy(upConn, down.Conn, rxf); err != nil {
		closeBoth()
	} else {
		netcopy.CloseWrite(upConn)
	}
	<-done
	closeBoth()
	return rx, tx
}

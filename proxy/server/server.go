// Package server assembles a running proxy from a bootstrap: stats, the
// cluster manager, listeners and the admin endpoint, and runs its lifecycle
// (start, drain, stop). New compiles and validates everything without binding
// a socket, so validate mode is New alone.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/outrider-proxy/outrider/proxy/admin"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/listener"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	xruntime "github.com/outrider-proxy/outrider/proxy/runtime"
	"github.com/outrider-proxy/outrider/proxy/sockopt"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	tlsctx "github.com/outrider-proxy/outrider/tls"
)

// Version is outrider's version, reported by --version and /server_info.
const Version = "0.1.0"

// Options are the command line's settings that reach the server.
type Options struct {
	Bootstrap        *bootstrapv3.Bootstrap
	ConfigPath       string
	LogLevel         *slog.LevelVar // nil: a new one at Info
	Log              *slog.Logger   // nil: slog.Default()
	DrainTime        time.Duration  // --drain-time-s; 0 means 600s as Envoy
	DrainImmediate   bool           // --drain-strategy immediate
	AdminAddressPath string
	ServiceCluster   string
	ServiceNode      string
	ServiceZone      string
	Concurrency      int
	CommandLine      []string
	// SPIFFEWorkloadAPI is --spiffe-workload-api: the SPIFFE Workload API
	// address ("unix:///path") whose SVIDs and bundles serve SDS secret
	// configs without an sds_config (see proxy/server/spiffe.go); "" none.
	SPIFFEWorkloadAPI string
}

// State is Envoy's server state.
type State int32

// Server states, as /server_info names them.
const (
	Initializing State = iota
	Live
	Draining
)

func (s State) String() string {
	return [...]string{"INITIALIZING", "LIVE", "DRAINING"}[s]
}

// Server is one proxy instance.
type Server struct {
	opts      Options
	log       *slog.Logger
	level     *slog.LevelVar
	stats     *stats.Store
	clusters  *upstream.Manager
	listeners []*listener.Listener
	admin     *admin.Server
	adminLn   net.Listener
	started   time.Time

	state       atomic.Int32
	hcFailed    atomic.Bool
	quit        chan struct{}
	quitOnce    sync.Once
	stopGauges  chan struct{}
	listenersMu sync.Mutex // guards listeners and draining, which xDS changes
	draining    []*listener.Listener
	stopped     bool     // listeners no longer accept
	dyn         *dynamic // xDS; nil without dynamic_resources, SDS or RTDS
	runtime     *xruntime.Loader
	rtds        []rtdsSub
	secrets     *secretProvider
	lsecrets    map[*listener.Listener][]string // SDS names a static listener waits for before serving
	connIDs     atomic.Uint64
	pipes       map[string]string // static clusters whose endpoint is a unix socket (pipe): name → path
	// handoff finds the active listener of an original destination for
	// use_original_dst listeners; kept current with listeners.
	handoff listener.Table

	// chainDraining are listeners an in-place update replaced, left with
	// the connections of their removed filter chains while these drain
	// (inplace.go), guarded by listenersMu; config_dump does not show them,
	// as Envoy.
	chainDraining []*listener.Listener
}

// New compiles the bootstrap. Errors name the field path.
func New(opts Options) (*Server, error) {
	b := opts.Bootstrap
	s := &Server{
		opts:       opts,
		log:        opts.Log,
		level:      opts.LogLevel,
		stats:      stats.NewStore(),
		started:    time.Now(),
		quit:       make(chan struct{}),
		stopGauges: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.level == nil {
		s.level = &slog.LevelVar{}
	}
	if err := confcheck.Fields(b, "", "node", "static_resources", "dynamic_resources", "admin", "cluster_manager", "layered_runtime",
		"stats_config", "stats_flush_interval", "overload_manager", "watchdog", "watchdogs",
		"enable_dispatcher_stats", "header_prefix", "use_tcp_for_dns_lookups", "dns_resolution_config",
		"typed_dns_resolver_config", "fatal_actions", "default_regex_engine", "application_log_config", "tracing"); err != nil {
		return nil, err
	}
	if hp := b.GetHeaderPrefix(); hp != "" && hp != "x-envoy" {
		return nil, fmt.Errorf("header_prefix: %q is not supported by outrider yet", hp)
	}
	for _, f := range []string{"stats_config", "overload_manager", "watchdog", "watchdogs"} {
		fd := b.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(f))
		if fd != nil && b.ProtoReflect().Has(fd) {
			s.log.Info("bootstrap field accepted but not acted on", "field", f)
		}
	}
	sr := b.GetStaticResources()
	if err := confcheck.Fields(sr, "static_resources", "listeners", "clusters", "secrets"); err != nil {
		return nil, err
	}
	secrets, err := tlsctx.NewSecrets(sr.GetSecrets())
	if err != nil {
		return nil, fmt.Errorf("static_resources.secrets: %w", err)
	}
	s.secrets = newSecretProvider(secrets)
	if a := opts.SPIFFEWorkloadAPI; a != "" {
		if err := s.secrets.useWorkloadAPI(a, s.stats, s.log); err != nil {
			return nil, err
		}
	}
	s.lsecrets = map[*listener.Listener][]string{}
	s.pipes = map[string]string{}
	var staticRefs []sdsRef
	for i, c := range sr.GetClusters() {
		staticRefs = append(staticRefs, clusterSDSRefs(fmt.Sprintf("static_resources.clusters[%d]", i), c)...)
	}
	lrefs := make([][]sdsRef, len(sr.GetListeners()))
	for i, lp := range sr.GetListeners() {
		lrefs[i] = listenerSDSRefs(fmt.Sprintf("static_resources.listeners[%d]", i), lp)
		staticRefs = append(staticRefs, lrefs[i]...)
	}
	hasSDS := false
	for _, r := range staticRefs {
		hasSDS = hasSDS || r.cs != nil
	}
	s.secrets.expectAll(s.stats, staticRefs)
	s.clusters = upstream.NewManager(s.stats.Root())
	s.clusters.Secrets = s.secrets
	s.clusters.LocalClusterName, s.clusters.LocalLocality = b.GetClusterManager().GetLocalClusterName(), s.node().GetLocality()
	s.clusters.Node = s.node()
	nctx := &netfilter.Context{Clusters: s.clusters, Stats: s.stats, Log: s.log, DrainTime: s.drainTime(), DrainGradual: !opts.DrainImmediate, Secrets: s.secrets}
	if t := b.GetTracing(); t != nil {
		if err := confcheck.Fields(t, "tracing", "http"); err != nil {
			return nil, err
		}
		nctx.Tracing = t.GetHttp()
	}
	grpcOnly := grpcOnlyClusters(b)
	if b.GetDynamicResources() != nil || hasSDS || hasRTDS(b) {
		s.dyn = newDynamic(s, nctx)
		s.clusters.Endpoints = s.dyn
		nctx.Routes = s.dyn
		nctx.Scoped = s.dyn
	}
	seen := map[string]int{}
	for i, c := range sr.GetClusters() {
		if j, dup := seen[c.GetName()]; dup {
			return nil, fmt.Errorf("static_resources.clusters[%d]: cluster name %q is also the name of clusters[%d]: cluster manager: duplicate cluster", i, c.GetName(), j)
		}
		seen[c.GetName()] = i
		if p, err := pipeClusterPath(c); err != nil {
			return nil, fmt.Errorf("static_resources.clusters[%d] (%s): %w", i, c.GetName(), err)
		} else if p != "" {
			s.pipes[c.GetName()] = p // an SDS/xDS gRPC target only (sds_pipe.go)
			continue
		}
		if grpcOnly[c.GetName()] {
			// grpc-go speaks HTTP/2 to a management server itself.
		} else if err := checkClusterFields(c, s.log); err != nil {
			return nil, fmt.Errorf("static_resources.clusters[%d] (%s): %w", i, c.GetName(), err)
		}
		if err := s.clusters.AddOrUpdate(c); err != nil {
			return nil, fmt.Errorf("static_resources.clusters[%d] (%s): %w", i, c.GetName(), err)
		}
	}
	if s.dyn != nil {
		if err := s.dyn.configure(); err != nil {
			return nil, err
		}
		if _, err := s.dyn.watchSecrets(staticRefs); err != nil {
			return nil, err
		}
	}
	if err := s.configureRuntime(); err != nil {
		return nil, err
	}
	names := map[string]int{}
	for i, lp := range sr.GetListeners() {
		if j, dup := names[lp.GetName()]; dup && lp.GetName() != "" {
			return nil, fmt.Errorf("static_resources.listeners[%d]: listener name %q is also the name of listeners[%d]: duplicate listener", i, lp.GetName(), j)
		}
		names[lp.GetName()] = i
		l, err := listener.Build(lp, nctx, &s.connIDs)
		if err != nil {
			return nil, fmt.Errorf("static_resources.listeners[%d] (%s): %w", i, lp.GetName(), err)
		}
		l.UseHandoff(&s.handoff)
		s.listeners = append(s.listeners, l)
		for _, r := range lrefs[i] {
			if r.cs != nil {
				s.lsecrets[l] = append(s.lsecrets[l], r.name)
			}
		}
	}
	s.handoff.Set(s.listeners)
	if a := b.GetAdmin(); a != nil {
		if err := confcheck.Fields(a, "admin", "address", "access_log", "access_log_path", "profile_path", "socket_options", "ignore_global_conn_limit"); err != nil {
			return nil, err
		}
	}
	s.initStats()
	s.admin = admin.New(s.level)
	s.admin.MountStats(s.stats)
	s.mountAdmin()
	return s, nil
}

func (s *Server) drainTime() time.Duration {
	if s.opts.DrainTime > 0 {
		return s.opts.DrainTime
	}
	return 600 * time.Second
}

// Stats is the server's stats store.
func (s *Server) Stats() *stats.Store { return s.stats }

// Clusters is the cluster manager.
func (s *Server) Clusters() *upstream.Manager { return s.clusters }

// Listeners are the compiled listeners in config order.
func (s *Server) Listeners() []*listener.Listener {
	s.listenersMu.Lock()
	defer s.listenersMu.Unlock()
	return slices.Clone(s.listeners)
}

// allListeners is the active listeners and those still draining after an
// update removed or replaced them, in whole or only some filter chains.
func (s *Server) allListeners() []*listener.Listener {
	s.listenersMu.Lock()
	defer s.listenersMu.Unlock()
	return slices.Concat(s.listeners, s.draining, s.chainDraining)
}

// allDraining is the listeners still draining after an update removed or
// replaced them.
func (s *Server) allDraining() []*listener.Listener {
	s.listenersMu.Lock()
	defer s.listenersMu.Unlock()
	return slices.Clone(s.draining)
}

// AdminAddr is the bound admin address; nil without admin.
func (s *Server) AdminAddr() net.Addr {
	if s.adminLn == nil {
		return nil
	}
	return s.adminLn.Addr()
}

// Start binds every socket (all or none) and starts accepting.
func (s *Server) Start(ctx context.Context) error {
	if a := s.opts.Bootstrap.GetAdmin().GetAddress(); a != nil {
		network, address, err := sockopt.AddrFromProto(a)
		if err != nil {
			return fmt.Errorf("admin.address: %w", err)
		}
		ln, err := sockopt.Listen(ctx, network, address, sockopt.ListenOptions{})
		if err != nil {
			return fmt.Errorf("admin.address: %w", err)
		}
		s.adminLn = ln
		if p := s.opts.AdminAddressPath; p != "" {
			if err := os.WriteFile(p, []byte(ln.Addr().String()), 0o644); err != nil {
				_ = ln.Close()
				return fmt.Errorf("--admin-address-path: %w", err)
			}
		}
	}
	for i, l := range s.listeners {
		if err := l.Bind(ctx); err != nil {
			for _, b := range s.listeners[:i] {
				b.StopAccepting()
			}
			if s.adminLn != nil {
				_ = s.adminLn.Close()
			}
			return err
		}
	}
	if s.adminLn != nil {
		go func() {
			if err := s.admin.Serve(s.adminLn); err != nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("admin server stopped", "err", err)
			}
		}()
	}
	if s.secrets.wl != nil {
		s.secrets.wl.start()
	}
	for _, l := range s.Listeners() {
		if s.secrets.wl != nil && s.usesWorkloadAPI(l) {
			go s.serveAfterWorkloadAPI(l) // warming until the first SVIDs (spiffe.go)
		} else if names := s.lsecrets[l]; len(names) > 0 && s.dyn != nil {
			// As a warming listener: bound, but not accepting until its
			// SDS secrets arrived or their initial fetch timed out.
			go func() {
				if s.dyn.waitSecrets(names) {
					l.Serve()
				}
			}()
		} else {
			go l.Serve()
		}
		s.log.Info("listener started", "name", l.Name, "address", l.Addr().String())
	}
	go s.updateGauges()
	if s.dyn == nil {
		s.state.Store(int32(Live))
		return nil
	}
	// INITIALIZING until the initial xDS fetch is done or timed out.
	s.startRuntime()
	s.dyn.start()
	go func() {
		if s.dyn.waitInit() {
			s.state.CompareAndSwap(int32(Initializing), int32(Live))
		}
	}()
	return nil
}

// Quit asks Run to return (admin /quitquitquit).
func (s *Server) Quit() { s.quitOnce.Do(func() { close(s.quit) }) }

// Run serves until ctx ends or Quit, then drains: listeners stop accepting,
// keep-alive connections are closed as their streams finish, and Run returns
// as soon as no connection is left or the drain time has passed.
func (s *Server) Run(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-s.quit:
	}
	s.Shutdown()
}

// Shutdown drains and stops everything.
func (s *Server) Shutdown() {
	if s.dyn != nil {
		s.dyn.close() // no more updates while shutting down
	}
	xruntime.ClearProcess(s.runtime)
	s.StartDrain(false)
	s.stopListeners(false)
	deadline := time.Now().Add(s.drainTime())
	for time.Now().Before(deadline) && s.activeConns() > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	all := s.allListeners()
	for _, l := range all {
		l.CloseAll()
	}
	// Give the connection goroutines a moment to finish their access logs,
	// then flush and release the logs.
	waited := make(chan struct{})
	go func() {
		for _, l := range all {
			l.Wait()
		}
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(time.Second):
	}
	for _, l := range all {
		l.Close()
	}
	if s.adminLn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.admin.Shutdown(ctx)
		cancel()
	}
	select {
	case <-s.stopGauges:
	default:
		close(s.stopGauges)
	}
	s.clusters.Close()
	if s.secrets.wl != nil {
		s.secrets.wl.stop()
	}
}

// StartDrain begins draining without stopping: responses on existing
// HTTP/1 connections get "Connection: close" and idle connections are
// closed, following the drain strategy. inboundOnly limits it to listeners
// whose traffic_direction is INBOUND.
func (s *Server) StartDrain(inboundOnly bool) {
	s.state.Store(int32(Draining))
	for _, l := range s.Listeners() {
		if inboundOnly && l.Proto.GetTrafficDirection().String() != "INBOUND" {
			continue
		}
		l.StartDrain()
	}
}

func (s *Server) stopListeners(inboundOnly bool) {
	s.listenersMu.Lock()
	defer s.listenersMu.Unlock()
	for _, l := range s.listeners {
		if inboundOnly && l.Proto.GetTrafficDirection().String() != "INBOUND" {
			continue
		}
		l.StopAccepting()
	}
	if !inboundOnly {
		s.stopped = true
	}
}

func (s *Server) activeConns() int {
	n := 0
	for _, l := range s.allListeners() {
		n += l.ActiveConns()
	}
	return n
}

// initStats creates the server.* stats Envoy always has.
func (s *Server) initStats() {
	r := s.stats.Scope("server")
	r.Gauge("live").Set(1)
	r.Gauge("concurrency").Set(int64(runtime.GOMAXPROCS(0)))
	r.Gauge("state").Set(int64(Initializing))
	r.Gauge("hot_restart_epoch").Set(0)
	r.Gauge("version").Set(0)
	r.Counter("debug_assertion_failures")
	r.Counter("envoy_bug_failures")
	r.Counter("static_unknown_fields")
	r.Counter("dynamic_unknown_fields")
	r.Counter("dropped_stat_flushes")
	s.updateServerGauges()
	lm := s.stats.Scope("listener_manager")
	lm.Gauge("total_listeners_active").Set(int64(len(s.listeners)))
	lm.Counter("listener_added").Add(uint64(len(s.listeners)))
	lm.Gauge("total_listeners_warming")
	lm.Gauge("total_listeners_draining")
	lm.Gauge("total_filter_chains_draining")
	lm.Counter("listener_in_place_updated")
	cm := s.stats.Scope("cluster_manager")
	n := len(s.clusters.Names())
	cm.Gauge("active_clusters").Set(int64(n))
	cm.Counter("cluster_added").Add(uint64(n))
	cm.Gauge("warming_clusters")
}

var memSample = []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}

func (s *Server) updateServerGauges() {
	r := s.stats.Scope("server")
	r.Gauge("uptime").Set(int64(time.Since(s.started).Seconds()))
	r.Gauge("state").Set(int64(State(s.state.Load())))
	samples := make([]metrics.Sample, len(memSample))
	copy(samples, memSample)
	metrics.Read(samples)
	r.Gauge("memory_allocated").Set(int64(samples[0].Value.Uint64()))
	r.Gauge("memory_heap_size").Set(int64(samples[1].Value.Uint64()))
	r.Gauge("memory_physical_size").Set(int64(samples[1].Value.Uint64()))
	r.Gauge("total_connections").Set(int64(s.activeConns()))
	r.Gauge("parent_connections").Set(0)
	r.Gauge("days_until_first_cert_expiring").Set(s.daysUntilFirstCertExpiring())
}

func (s *Server) updateGauges() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.updateServerGauges()
		case <-s.stopGauges:
			return
		}
	}
}

// refusedClusterFields change what goes on the wire (TLS, HTTP/2, subsets):
// outrider refuses them until it implements them. The other fields
// upstream.Unenforced lists only change behaviour under failure and are
// logged.
var refusedClusterFields = map[string]bool{
	"transport_socket_matcher":       true,
	"upstream_http_protocol_options": true, "lb_subset_config": true,
}

func checkClusterFields(c *clusterv3.Cluster, log *slog.Logger) error {
	for _, f := range upstream.Unenforced(c) {
		if refusedClusterFields[f] {
			return fmt.Errorf("%s: field not supported by outrider yet", f)
		}
		log.Warn("cluster field accepted but not enforced yet", "cluster", c.GetName(), "field", f)
	}
	return nil
}

// node is the bootstrap's node as the command line completed it.
func (s *Server) node() *corev3.Node {
	if n := s.opts.Bootstrap.GetNode(); n != nil {
		return proto.Clone(n).(*corev3.Node)
	}
	return &corev3.Node{}
}

// hasStaticListener reports whether the bootstrap names a listener so.
func (s *Server) hasStaticListener(name string) bool {
	for _, l := range s.opts.Bootstrap.GetStaticResources().GetListeners() {
		if l.GetName() == name {
			return true
		}
	}
	return false
}

// addListener puts l (may be nil) in service and drains old (may be nil):
// old stops accepting at once, its connections get the drain time to end,
// then it is closed.
func (s *Server) addListener(l, old *listener.Listener) {
	s.listenersMu.Lock()
	if old != nil {
		s.listeners = slices.DeleteFunc(s.listeners, func(x *listener.Listener) bool { return x == old })
		s.draining = append(s.draining, old)
	}
	if l != nil {
		s.listeners = append(s.listeners, l)
	}
	s.handoff.Set(s.listeners)
	// Set under the lock, so that concurrent changes publish in order.
	lm := s.stats.Scope("listener_manager")
	lm.Gauge("total_listeners_active").Set(int64(len(s.listeners)))
	lm.Gauge("total_listeners_draining").Set(int64(len(s.draining)))
	s.listenersMu.Unlock()
	if old == nil {
		if l != nil {
			lm.Counter("listener_added").Inc()
		}
		return
	}
	if l != nil {
		lm.Counter("listener_modified").Inc()
	} else {
		lm.Counter("listener_removed").Inc()
	}
	old.StopAccepting()
	old.StartDrain()
	go func() {
		deadline := time.Now().Add(s.drainTime())
		for old.ActiveConns() > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		old.CloseAll()
		old.Close()
		s.listenersMu.Lock()
		s.draining = slices.DeleteFunc(s.draining, func(x *listener.Listener) bool { return x == old })
		lm.Gauge("total_listeners_draining").Set(int64(len(s.draining)))
		s.listenersMu.Unlock()
	}()
}

package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	datacorev3 "github.com/envoyproxy/go-control-plane/envoy/data/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Envoy's health check defaults.
const defaultNoTrafficInterval = 60 * time.Second

// hcResult is the outcome of one active check.
type hcResult struct {
	ok        bool
	degraded  bool                              // success with x-envoy-degraded
	failure   datacorev3.HealthCheckFailureType // ACTIVE, NETWORK or NETWORK_TIMEOUT
	retriable bool                              // an HTTP retriable_statuses answer
	code      int                               // HTTP status of a failed HTTP check; 0 if none
}

// hcProber performs one check of a host within ctx. It keeps per-host state
// (a reused connection) in the session and must close it in closeSession.
type hcProber interface {
	probe(ctx context.Context, s *hcSession) hcResult
	closeSession(s *hcSession)
	kind() datacorev3.HealthCheckerType
}

// HealthCheckStats are the cluster.<name>.health_check.* stats.
type HealthCheckStats struct {
	Attempt, Success, Failure, NetworkFailure, PassiveFailure, VerifyCluster *stats.Counter
	Healthy, Degraded                                                        *stats.Gauge
}

var healthCheckLayout = stats.LayoutOf((&HealthCheckStats{}).fill)

func newHealthCheckStats(s stats.Scope) *HealthCheckStats {
	h := &HealthCheckStats{}
	s.Block(healthCheckLayout).Fill(h.fill)
	return h
}

func (h *HealthCheckStats) fill(c func(string) *stats.Counter, g func(string) *stats.Gauge) {
	*h = HealthCheckStats{
		Attempt: c("attempt"), Success: c("success"), Failure: c("failure"),
		NetworkFailure: c("network_failure"), PassiveFailure: c("passive_failure"),
		VerifyCluster: c("verify_cluster"),
		Healthy:       g("healthy"), Degraded: g("degraded"),
	}
}

// healthChecker is a cluster's compiled health_checks entry; it runs one
// goroutine (session) per host.
type healthChecker struct {
	c      *Cluster
	prober hcProber
	stats  *HealthCheckStats

	timeout, interval, noTraffic, noTrafficHealthy time.Duration
	unhealthyInterval, unhealthyEdge, healthyEdge  time.Duration
	jitter, initialJitter                          time.Duration
	jitterPercent                                  uint64
	unhealthyThreshold, healthyThreshold           uint32
	alwaysLogFailures                              bool

	logMu   sync.Mutex
	logFile *os.File // event_log_path; nil when unset

	sessions map[*Host]*hcSession // guarded by the cluster's hostMu

	// Warming: synced is set by the first sync; initPending counts the
	// first set's hosts not checked yet; initDone is set when it reaches 0.
	synced      atomic.Bool
	initPending atomic.Int64
	initDone    atomic.Bool
	healthy     atomic.Int64
	degraded    atomic.Int64
}

// hcSession is the health checking of one host.
type hcSession struct {
	hc     *healthChecker
	host   *Host
	cancel context.CancelFunc
	first  bool
	// warming is set for hosts of the first host set until their first
	// check completes (or they are removed).
	warming atomic.Bool
	nOK     uint32 // consecutive successes while failed
	nFail   uint32 // consecutive counted failures while healthy

	// Prober state.
	conn  net.Conn
	state any
}

func compileHealthCheck(c *Cluster, hc *corev3.HealthCheck) (*healthChecker, error) {
	h := &healthChecker{
		c:                  c,
		stats:              newHealthCheckStats(c.Stats.Scope().Scope("health_check")),
		timeout:            hc.GetTimeout().AsDuration(),
		interval:           hc.GetInterval().AsDuration(),
		noTraffic:          defaultNoTrafficInterval,
		jitter:             hc.GetIntervalJitter().AsDuration(),
		initialJitter:      hc.GetInitialJitter().AsDuration(),
		jitterPercent:      uint64(hc.GetIntervalJitterPercent()),
		unhealthyThreshold: max(hc.GetUnhealthyThreshold().GetValue(), 1),
		healthyThreshold:   max(hc.GetHealthyThreshold().GetValue(), 1),
		alwaysLogFailures:  hc.GetAlwaysLogHealthCheckFailures(),
		sessions:           map[*Host]*hcSession{},
	}
	if d := hc.GetNoTrafficInterval(); d != nil {
		h.noTraffic = d.AsDuration()
	}
	if d := hc.GetNoTrafficHealthyInterval(); d != nil {
		h.noTrafficHealthy = d.AsDuration()
	}
	h.unhealthyInterval = h.interval
	if d := hc.GetUnhealthyInterval(); d != nil {
		h.unhealthyInterval = d.AsDuration()
	}
	h.unhealthyEdge = h.unhealthyInterval
	if d := hc.GetUnhealthyEdgeInterval(); d != nil {
		h.unhealthyEdge = d.AsDuration()
	}
	h.healthyEdge = h.interval
	if d := hc.GetHealthyEdgeInterval(); d != nil {
		h.healthyEdge = d.AsDuration()
	}
	switch {
	case hc.GetReuseConnection() != nil && !hc.GetReuseConnection().GetValue() && hc.GetGrpcHealthCheck() != nil:
		return nil, fmt.Errorf("reuse_connection: false is not supported yet for grpc_health_check")
	case len(hc.GetEventLogger()) > 0:
		return nil, fmt.Errorf("event_logger is not supported yet")
	case hc.GetTransportSocketMatchCriteria() != nil:
		return nil, fmt.Errorf("transport_socket_match_criteria is not supported yet")
	case hc.GetTlsOptions() != nil:
		return nil, fmt.Errorf("tls_options is not supported yet")
	case hc.GetAlwaysLogHealthCheckSuccess():
		return nil, fmt.Errorf("always_log_health_check_success is not supported yet")
	case hc.GetAltPort() != nil:
		return nil, fmt.Errorf("alt_port is not supported yet")
	}
	reuse := hc.GetReuseConnection() == nil || hc.GetReuseConnection().GetValue()
	var err error
	switch k := hc.GetHealthChecker().(type) {
	case *corev3.HealthCheck_HttpHealthCheck_:
		h.prober, err = newHTTPProber(c, k.HttpHealthCheck, reuse)
		if err != nil {
			return nil, fmt.Errorf("http_health_check.%w", err)
		}
	case *corev3.HealthCheck_TcpHealthCheck_:
		h.prober, err = newTCPProber(k.TcpHealthCheck, reuse)
		if err != nil {
			return nil, fmt.Errorf("tcp_health_check.%w", err)
		}
	case *corev3.HealthCheck_GrpcHealthCheck_:
		h.prober = newGRPCProber(c, k.GrpcHealthCheck)
	default:
		return nil, fmt.Errorf("health_checker: only http_health_check, tcp_health_check and grpc_health_check are supported")
	}
	if p := hc.GetEventLogPath(); p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("event_log_path: %w", err)
		}
		h.logFile = f
	}
	return h, nil
}

// sync starts sessions for new hosts and stops those of removed ones; the
// cluster's hostMu is held. New hosts start failed_active_hc until their
// first successful check, as Envoy's.
func (h *healthChecker) sync(hosts []*Host) {
	initial := !h.synced.Swap(true)
	if initial {
		n := int64(0)
		for _, host := range hosts {
			if !host.hcDisabled && !host.hcCarried {
				n++
			}
		}
		h.initPending.Store(n)
		if n == 0 {
			h.initDone.Store(true)
		}
	}
	keep := make(map[*Host]bool, len(hosts))
	for _, host := range hosts {
		keep[host] = true
		if h.sessions[host] != nil || host.hcDisabled {
			continue
		}
		ctx, cancel := context.WithCancel(h.c.stopContext())
		s := &hcSession{hc: h, host: host, cancel: cancel, first: !host.hcCarried}
		if host.hcCarried { // flags taken from the replaced cluster's host
			if !host.flags.load(fFailedActiveHC) {
				h.stats.Healthy.Set(h.healthy.Add(1))
			}
			if host.flags.load(fDegradedActiveHC) {
				h.stats.Degraded.Set(h.degraded.Add(1))
			}
		} else {
			host.flags.store(fFailedActiveHC, true)
			s.warming.Store(initial)
		}
		h.sessions[host] = s
		h.c.wg.Add(1)
		go s.run(ctx)
	}
	for host, s := range h.sessions {
		if !keep[host] {
			s.cancel()
			h.warmed(s)
			delete(h.sessions, host)
			if !host.flags.load(fFailedActiveHC) {
				h.stats.Healthy.Set(h.healthy.Add(-1))
			}
			if host.flags.load(fDegradedActiveHC) {
				h.stats.Degraded.Set(h.degraded.Add(-1))
			}
		}
	}
}

func (h *healthChecker) close() {
	if h.logFile != nil {
		h.logMu.Lock()
		h.logFile.Close()
		h.logFile = nil
		h.logMu.Unlock()
	}
}

func (s *hcSession) run(ctx context.Context) {
	h := s.hc
	defer h.c.wg.Done()
	defer h.prober.closeSession(s)
	var wait time.Duration
	if h.initialJitter > 0 {
		wait = time.Duration(rand.Int64N(int64(h.initialJitter)))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for range 1 << 40 { // bounded by cancellation in practice
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.stats.Attempt.Inc()
		pctx, cancel := context.WithTimeout(ctx, h.timeout)
		res := h.prober.probe(pctx, s)
		dl, _ := pctx.Deadline()
		timedOut := pctx.Err() == context.DeadlineExceeded || !time.Now().Before(dl)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if !res.ok && timedOut {
			res.failure = datacorev3.HealthCheckFailureType_NETWORK_TIMEOUT
		}
		t.Reset(s.handle(res))
		h.warmed(s)
	}
}

// warmed ends s's part in the cluster's warming (once).
func (h *healthChecker) warmed(s *hcSession) {
	if s.warming.CompareAndSwap(true, false) && h.initPending.Add(-1) == 0 {
		h.initDone.Store(true)
		h.c.tryInitialized()
	}
}

// transition is Envoy's HealthTransition.
type transition uint8

const (
	unchanged transition = iota
	changed
	changePending
)

// handle applies one result as Envoy's ActiveHealthCheckSession does and
// returns the delay before the next check.
func (s *hcSession) handle(r hcResult) time.Duration {
	h, host := s.hc, s.host
	first := s.first
	s.first = false
	tr := unchanged
	if r.ok {
		s.nFail = 0
		if host.flags.load(fFailedActiveHC) {
			s.nOK++
			if first || s.nOK >= h.healthyThreshold {
				host.flags.store(fActiveHCTimeout, false)
				host.flags.store(fFailedActiveHC, false)
				h.stats.Healthy.Set(h.healthy.Add(1))
				tr = changed
				h.logEvent(host, func(e *datacorev3.HealthCheckEvent) {
					e.Event = &datacorev3.HealthCheckEvent_AddHealthyEvent{AddHealthyEvent: &datacorev3.HealthCheckAddHealthy{FirstCheck: first}}
				})
			} else {
				tr = changePending
			}
		}
		if r.degraded != host.flags.load(fDegradedActiveHC) {
			host.flags.store(fDegradedActiveHC, r.degraded)
			if r.degraded {
				h.stats.Degraded.Set(h.degraded.Add(1))
				h.logEvent(host, func(e *datacorev3.HealthCheckEvent) {
					e.Event = &datacorev3.HealthCheckEvent_DegradedHealthyHost{DegradedHealthyHost: &datacorev3.DegradedHealthyHost{}}
				})
			} else {
				h.stats.Degraded.Set(h.degraded.Add(-1))
				h.logEvent(host, func(e *datacorev3.HealthCheckEvent) {
					e.Event = &datacorev3.HealthCheckEvent_NoLongerDegradedHost{NoLongerDegradedHost: &datacorev3.NoLongerDegradedHost{}}
				})
			}
			tr = changed
		}
		if d := h.c.outlier; d != nil && d.onHealthCheckSuccess(host) {
			tr = changed
		}
		h.stats.Success.Inc()
	} else {
		s.nOK = 0
		network := r.failure == datacorev3.HealthCheckFailureType_NETWORK || r.failure == datacorev3.HealthCheckFailureType_NETWORK_TIMEOUT
		if !host.flags.load(fFailedActiveHC) {
			s.nFail++
			if (!network && !r.retriable) || s.nFail >= h.unhealthyThreshold {
				host.flags.store(fFailedActiveHC, true)
				host.closeOnUnhealthy()
				if host.flags.load(fPendingRemoval) {
					go h.c.removePending(host) // not here: removing it ends this session
				}
				h.stats.Healthy.Set(h.healthy.Add(-1))
				tr = changed
				h.logEvent(host, func(e *datacorev3.HealthCheckEvent) {
					e.Event = &datacorev3.HealthCheckEvent_EjectUnhealthyEvent{EjectUnhealthyEvent: &datacorev3.HealthCheckEjectUnhealthy{FailureType: r.failure, HttpStatusCode: uint32(r.code)}}
				})
			} else {
				tr = changePending
			}
		}
		host.flags.store(fActiveHCTimeout, r.failure == datacorev3.HealthCheckFailureType_NETWORK_TIMEOUT && host.flags.load(fFailedActiveHC))
		if first || h.alwaysLogFailures {
			h.logEvent(host, func(e *datacorev3.HealthCheckEvent) {
				e.Event = &datacorev3.HealthCheckEvent_HealthCheckFailureEvent{HealthCheckFailureEvent: &datacorev3.HealthCheckFailure{FailureType: r.failure, FirstCheck: first, HttpStatusCode: uint32(r.code)}}
			})
		}
		h.stats.Failure.Inc()
		if network {
			h.stats.NetworkFailure.Inc()
		}
	}
	if tr == changed {
		h.c.RefreshHealth()
	}
	return h.next(r.ok, tr, host)
}

// next is Envoy's HealthCheckerImplBase::interval: no_traffic_interval until
// the cluster has made a connection, then interval / unhealthy_interval or
// their edge variants while a transition is pending, plus jitter.
func (h *healthChecker) next(ok bool, tr transition, host *Host) time.Duration {
	var base time.Duration
	switch {
	case h.c.Stats.UpstreamCxTotal().Value() == 0:
		base = h.noTraffic
		if h.noTrafficHealthy > 0 && !host.flags.load(fFailedActiveHC) {
			base = h.noTrafficHealthy
		}
	case !ok && tr == changePending:
		base = h.unhealthyEdge
	case !ok:
		base = h.unhealthyInterval
	case tr == changePending:
		base = h.healthyEdge
	default:
		base = h.interval
	}
	ms := uint64(base.Milliseconds())
	if mod := h.jitterPercent * ms / 100; mod > 0 {
		ms += rand.Uint64N(mod)
	}
	if j := uint64(h.jitter.Milliseconds()); j > 0 {
		ms += rand.Uint64N(j)
	}
	return time.Duration(ms) * time.Millisecond
}

// logEvent appends one HealthCheckEvent as a JSON line to event_log_path,
// with proto field names and default values printed, as Envoy writes it.
func (h *healthChecker) logEvent(host *Host, fill func(*datacorev3.HealthCheckEvent)) {
	if h.logFile == nil {
		return
	}
	e := &datacorev3.HealthCheckEvent{
		HealthCheckerType: h.prober.kind(),
		Host:              socketAddress(host.Addr),
		ClusterName:       h.c.Name,
		Timestamp:         timestamppb.New(time.Now().Truncate(time.Millisecond)),
		Metadata:          host.Metadata,
		Locality:          host.Locality,
	}
	fill(e)
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}.Marshal(e)
	if err != nil {
		return
	}
	var line bytes.Buffer
	if json.Compact(&line, b) != nil { // protojson's spacing is deliberately unstable
		return
	}
	line.WriteByte('\n')
	h.logMu.Lock()
	defer h.logMu.Unlock()
	if h.logFile != nil {
		h.logFile.Write(line.Bytes())
	}
}

func socketAddress(a netip.AddrPort) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: a.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(a.Port())}}}}
}

// checkAddr is where checks of host go: its address, with
// health_check_config.port_value when set.
func checkAddr(host *Host) string {
	a := host.Addr
	if host.hcPort != 0 {
		a = netip.AddrPortFrom(a.Addr(), host.hcPort)
	}
	return net.JoinHostPort(a.Addr().String(), strconv.Itoa(int(a.Port())))
}

// dialCheck connects for a check without counting the cluster's
// upstream_cx_* stats (Envoy's health check connections do not).
func (h *healthChecker) dialCheck(ctx context.Context, host *Host) (net.Conn, error) {
	return h.c.dialer.DialContext(ctx, "tcp", checkAddr(host))
}

package upstream

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// OutlierResult is a request outcome that is not an upstream HTTP response
// (Envoy's Outlier::Result), for Host.ReportResult.
type OutlierResult uint8

// Outlier results, as Envoy's router reports them.
const (
	// ResultConnectSuccess: the connection to the host was established
	// (LOCAL_ORIGIN_CONNECT_SUCCESS).
	ResultConnectSuccess OutlierResult = iota
	// ResultConnectFailed: connecting failed or was reset before any
	// response (LOCAL_ORIGIN_CONNECT_FAILED).
	ResultConnectFailed
	// ResultTimeout: the request timed out waiting for the host
	// (LOCAL_ORIGIN_TIMEOUT).
	ResultTimeout
	// ResultRequestFailed: the host failed the request after connecting,
	// e.g. reset the stream (EXT_ORIGIN_REQUEST_FAILED).
	ResultRequestFailed
	// ResultRequestSuccess: the request succeeded at the transaction level
	// (EXT_ORIGIN_REQUEST_SUCCESS).
	ResultRequestSuccess
)

// ejection types, named as Envoy's stats and OutlierEjectionType.
type ejectType uint8

const (
	ejConsecutive5xx ejectType = iota
	ejSuccessRate
	ejConsecutiveGateway
	ejConsecutiveLocal
	ejSuccessRateLocal
	ejFailurePercentage
	ejFailurePercentageLocal
	numEjectTypes
)

var ejectNames = [numEjectTypes][2]string{ // detected, enforced stat suffix
	{"consecutive_5xx", "consecutive_5xx"},
	{"success_rate", "success_rate"},
	{"consecutive_gateway_failure", "consecutive_gateway_failure"},
	{"consecutive_local_origin_failure", "consecutive_local_origin_failure"},
	{"local_origin_success_rate", "local_origin_success_rate"},
	{"failure_percentage", "failure_percentage"},
	{"local_origin_failure_percentage", "failure_percentage_local_origin"},
}

// OutlierStats are the cluster.<name>.outlier_detection.* stats.
type OutlierStats struct {
	EjectionsActive        *stats.Gauge
	EjectionsEnforcedTotal *stats.Counter
	EjectionsOverflow      *stats.Counter
	EjectionsTotal         *stats.Counter // deprecated ejections_total
	Detected, Enforced     [numEjectTypes]*stats.Counter
}

var outlierLayout = stats.LayoutOf((&OutlierStats{}).fill) // after ejectStatNames: Go orders package initialisation by dependency

func newOutlierStats(s stats.Scope) *OutlierStats {
	o := &OutlierStats{}
	s.Block(outlierLayout).Fill(o.fill)
	return o
}

func (o *OutlierStats) fill(c func(string) *stats.Counter, g func(string) *stats.Gauge) {
	o.EjectionsActive = g("ejections_active")
	o.EjectionsEnforcedTotal = c("ejections_enforced_total")
	o.EjectionsOverflow = c("ejections_overflow")
	o.EjectionsTotal = c("ejections_total")
	for i, n := range ejectStatNames {
		o.Detected[i] = c(n[0])
		o.Enforced[i] = c(n[1])
	}
}

// ejectStatNames are the ejections_detected_* and ejections_enforced_* names.
var ejectStatNames = func() (out [numEjectTypes][2]string) {
	for i, n := range ejectNames {
		out[i] = [2]string{"ejections_detected_" + n[0], "ejections_enforced_" + n[1]}
	}
	return out
}()

// srBucket counts requests of one interval.
type srBucket struct{ total, success atomic.Uint64 }

// outlierHost is one host's outlier state. Counters are atomics updated by
// the reporting goroutines; the rest is guarded by the detector's mutex.
type outlierHost struct {
	c5xx, cGateway, cLocal atomic.Uint32
	ext, local             srBucket // current interval

	// srExt and srLocal are the last interval's success rates (float64
	// bits) for /clusters; -1 when the host had too few requests.
	srExt, srLocal atomic.Uint64

	numEjections uint32
	backoff      uint32
	ejectedAt    time.Time
	jitter       time.Duration
}

// outlierDetector is a cluster's compiled outlier_detection.
type outlierDetector struct {
	c     *Cluster
	stats *OutlierStats
	now   func() time.Time // time.Now; tests replace it

	interval, baseEject, maxEject, maxJitter time.Duration
	consecutive5xx, consecutiveGateway       uint32
	consecutiveLocal                         uint32
	split, alwaysEjectOne, hcUneject         bool
	maxEjectPercent                          uint64
	enforce                                  [numEjectTypes]uint32
	srMinHosts, srVolume, fpMinHosts         uint64
	fpVolume                                 uint64
	srStdev, fpThreshold                     float64

	mu     sync.Mutex
	hosts  map[*Host]*outlierHost
	active int64
	// srNums are the last success rate mean and ejection threshold
	// (float64 bits; -1 when not computed), external and local origin.
	srNums [2][2]atomic.Uint64
}

var minusOne = math.Float64bits(-1)

// OutlierSuccessRate is the host's success rate over the last outlier
// detection interval, for /clusters (external origin, or local origin with
// split_external_local_origin_errors); -1 when not computed or without
// outlier_detection.
func (h *Host) OutlierSuccessRate(localOrigin bool) float64 {
	o := h.outlierState()
	if o == nil {
		return -1
	}
	if localOrigin {
		return math.Float64frombits(o.srLocal.Load())
	}
	return math.Float64frombits(o.srExt.Load())
}

// OutlierSuccessRateStats are the last interval's success rate average and
// ejection threshold (Envoy's /clusters outlier::success_rate_average and
// success_rate_ejection_threshold); -1 when not computed or without
// outlier_detection.
func (c *Cluster) OutlierSuccessRateStats(localOrigin bool) (average, threshold float64) {
	if c.outlier == nil {
		return -1, -1
	}
	i := 0
	if localOrigin {
		i = 1
	}
	n := &c.outlier.srNums[i]
	return math.Float64frombits(n[0].Load()), math.Float64frombits(n[1].Load())
}

func u32(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

func dur(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

func compileOutlier(c *Cluster, o *clusterv3.OutlierDetection) (*outlierDetector, error) {
	switch {
	case len(o.GetMonitors()) > 0:
		return nil, fmt.Errorf("outlier_detection.monitors: not supported yet")
	case o.GetDetectDegradedHosts().GetValue():
		return nil, fmt.Errorf("outlier_detection.detect_degraded_hosts: not supported yet")
	}
	d := &outlierDetector{
		c:                  c,
		stats:              newOutlierStats(c.Stats.Scope().Scope("outlier_detection")),
		now:                time.Now,
		interval:           dur(o.GetInterval(), 10*time.Second),
		baseEject:          dur(o.GetBaseEjectionTime(), 30*time.Second),
		maxEject:           dur(o.GetMaxEjectionTime(), 300*time.Second),
		maxJitter:          dur(o.GetMaxEjectionTimeJitter(), 0),
		consecutive5xx:     u32(o.GetConsecutive_5Xx(), 5),
		consecutiveGateway: u32(o.GetConsecutiveGatewayFailure(), 5),
		consecutiveLocal:   u32(o.GetConsecutiveLocalOriginFailure(), 5),
		split:              o.GetSplitExternalLocalOriginErrors(),
		alwaysEjectOne:     o.GetAlwaysEjectOneHost().GetValue(),
		hcUneject:          o.GetSuccessfulActiveHealthCheckUnejectHost() == nil || o.GetSuccessfulActiveHealthCheckUnejectHost().GetValue(),
		maxEjectPercent:    uint64(min(u32(o.GetMaxEjectionPercent(), 10), 100)),
		srMinHosts:         uint64(u32(o.GetSuccessRateMinimumHosts(), 5)),
		srVolume:           uint64(u32(o.GetSuccessRateRequestVolume(), 100)),
		fpMinHosts:         uint64(u32(o.GetFailurePercentageMinimumHosts(), 5)),
		fpVolume:           uint64(u32(o.GetFailurePercentageRequestVolume(), 50)),
		srStdev:            float64(u32(o.GetSuccessRateStdevFactor(), 1900)) / 1000,
		fpThreshold:        float64(u32(o.GetFailurePercentageThreshold(), 85)),
		hosts:              map[*Host]*outlierHost{},
	}
	for i := range d.srNums {
		d.srNums[i][0].Store(minusOne)
		d.srNums[i][1].Store(minusOne)
	}
	if d.interval <= 0 {
		return nil, fmt.Errorf("outlier_detection.interval: must be positive")
	}
	d.enforce = [numEjectTypes]uint32{
		ejConsecutive5xx:         u32(o.GetEnforcingConsecutive_5Xx(), 100),
		ejSuccessRate:            u32(o.GetEnforcingSuccessRate(), 100),
		ejConsecutiveGateway:     u32(o.GetEnforcingConsecutiveGatewayFailure(), 0),
		ejConsecutiveLocal:       u32(o.GetEnforcingConsecutiveLocalOriginFailure(), 100),
		ejSuccessRateLocal:       u32(o.GetEnforcingLocalOriginSuccessRate(), 100),
		ejFailurePercentage:      u32(o.GetEnforcingFailurePercentage(), 0),
		ejFailurePercentageLocal: u32(o.GetEnforcingFailurePercentageLocalOrigin(), 0),
	}
	return d, nil
}

// start runs the interval timer until the cluster drains.
func (d *outlierDetector) start() {
	d.c.wg.Add(1)
	go func() {
		defer d.c.wg.Done()
		t := time.NewTicker(d.interval)
		defer t.Stop()
		for {
			select {
			case <-d.c.stopContext().Done():
				return
			case <-t.C:
				d.onInterval()
			}
		}
	}()
}

// sync gives new hosts their state and forgets removed ones; the cluster's
// hostMu is held and the hosts are not yet published.
func (d *outlierDetector) sync(hosts []*Host) {
	d.mu.Lock()
	defer d.mu.Unlock()
	keep := make(map[*Host]bool, len(hosts))
	for _, h := range hosts {
		keep[h] = true
		if ho := h.outlierState(); ho == nil {
			o := &outlierHost{}
			o.srExt.Store(minusOne)
			o.srLocal.Store(minusOne)
			h.runtime().outlier = o
			d.hosts[h] = o
		} else if d.hosts[h] == nil { // state taken from the replaced cluster
			d.hosts[h] = ho
			if h.flags.load(fFailedOutlier) {
				d.active++
				d.stats.EjectionsActive.Set(d.active)
			}
		}
	}
	for h := range d.hosts {
		if !keep[h] {
			if h.flags.load(fFailedOutlier) {
				d.active--
				d.stats.EjectionsActive.Set(d.active)
			}
			delete(d.hosts, h)
		}
	}
}

// ReportResponse records an upstream HTTP response status for outlier
// detection (Envoy's putHttpResponseCode): 5xx count toward consecutive_5xx,
// 502/503/504 also toward consecutive_gateway_failure, everything else
// resets both; every response counts for success rate. The router calls it
// once per upstream response. It is a no-op without outlier_detection and
// does not allocate.
func (h *Host) ReportResponse(code int) {
	o := h.outlierState()
	if o == nil {
		return
	}
	o.ext.total.Add(1)
	if code < 500 || code > 599 {
		o.ext.success.Add(1)
		o.c5xx.Store(0)
		o.cGateway.Store(0)
		return
	}
	d := h.cluster.outlier
	if code >= 502 && code <= 504 {
		if o.cGateway.Add(1) == d.consecutiveGateway {
			d.onConsecutive(h, ejConsecutiveGateway)
		}
	} else {
		o.cGateway.Store(0)
	}
	if o.c5xx.Add(1) == d.consecutive5xx {
		d.onConsecutive(h, ejConsecutive5xx)
	}
}

// ReportResult records an outcome other than an HTTP response (Envoy's
// putResult). Without split_external_local_origin_errors, local-origin
// results count as HTTP codes (connect failure 503, timeout 504, request
// failure 500, successes 200; ResultConnectSuccess counts as 200 too). With
// it, connect failures and timeouts count toward
// consecutive_local_origin_failure and the local-origin success rate,
// ResultRequestFailed as a 503 and ResultRequestSuccess as a 200. It is a
// no-op without outlier_detection and does not allocate.
func (h *Host) ReportResult(r OutlierResult) {
	o := h.outlierState()
	if o == nil {
		return
	}
	d := h.cluster.outlier
	if !d.split {
		switch r {
		case ResultConnectSuccess, ResultRequestSuccess:
			h.ReportResponse(200)
		case ResultTimeout:
			h.ReportResponse(504)
		case ResultConnectFailed:
			h.ReportResponse(503)
		case ResultRequestFailed:
			h.ReportResponse(500)
		}
		return
	}
	switch r {
	case ResultConnectSuccess:
		o.local.total.Add(1)
		o.local.success.Add(1)
		o.cLocal.Store(0)
	case ResultConnectFailed, ResultTimeout:
		o.local.total.Add(1)
		if o.cLocal.Add(1) == d.consecutiveLocal {
			d.onConsecutive(h, ejConsecutiveLocal)
		}
	case ResultRequestFailed:
		h.ReportResponse(503)
	case ResultRequestSuccess:
		h.ReportResponse(200)
	}
}

// onConsecutive is Envoy's onConsecutiveErrorWorker.
func (d *outlierDetector) onConsecutive(h *Host, t ejectType) {
	d.mu.Lock()
	o := d.hosts[h]
	if o == nil || h.flags.load(fFailedOutlier) {
		d.mu.Unlock()
		return
	}
	d.stats.Detected[t].Inc()
	ejected := d.ejectLocked(h, o, t)
	switch t {
	case ejConsecutive5xx:
		o.c5xx.Store(0)
	case ejConsecutiveGateway:
		o.cGateway.Store(0)
	case ejConsecutiveLocal:
		o.cLocal.Store(0)
	}
	d.mu.Unlock()
	if ejected {
		d.c.RefreshHealth()
	}
}

// ejectLocked is Envoy's ejectHost: it honours max_ejection_percent
// (counting this ejection; always_eject_one_host lets a first one through)
// and the enforcing_* percentage. d.mu is held.
func (d *outlierDetector) ejectLocked(h *Host, o *outlierHost, t ejectType) bool {
	pct := 100 * float64(d.active+1) / float64(len(d.hosts))
	if !(pct <= float64(d.maxEjectPercent) || (d.alwaysEjectOne && d.active == 0)) {
		d.stats.EjectionsOverflow.Inc()
		return false
	}
	if t == ejConsecutive5xx || t == ejSuccessRate {
		d.stats.EjectionsTotal.Inc()
	}
	if e := d.enforce[t]; e == 0 || (e < 100 && rand.Uint32N(100) >= e) {
		return false
	}
	d.active++
	d.stats.EjectionsActive.Set(d.active)
	d.stats.EjectionsEnforcedTotal.Inc()
	d.stats.Enforced[t].Inc()
	h.flags.store(fFailedOutlier, true)
	h.closeOnUnhealthy()
	o.numEjections++
	o.ejectedAt = d.now()
	if time.Duration(o.backoff)*d.baseEject < d.maxEject+d.baseEject {
		o.backoff++
	}
	o.jitter = 0
	if d.maxJitter > 0 {
		o.jitter = time.Duration(rand.Int64N(int64(d.maxJitter)))
	}
	return true
}

// onInterval is Envoy's onIntervalTimer: uneject hosts whose ejection time
// (base_ejection_time × back-off, at most max_ejection_time, plus jitter)
// has passed, decay the back-off of healthy hosts, then run the success
// rate and failure percentage detectors over the interval's counts.
func (d *outlierDetector) onInterval() {
	d.mu.Lock()
	now := d.now()
	changed := false
	type sample struct {
		h        *Host
		o        *outlierHost
		ext, loc [2]uint64 // total, success
	}
	samples := make([]sample, 0, len(d.hosts))
	for h, o := range d.hosts {
		if !h.flags.load(fFailedOutlier) {
			if o.backoff > 0 {
				o.backoff--
			}
		} else if min(d.baseEject*time.Duration(o.backoff), d.maxEject)+o.jitter <= now.Sub(o.ejectedAt) {
			d.unejectLocked(h, o)
			changed = true
		}
		o.srExt.Store(minusOne)
		o.srLocal.Store(minusOne)
		samples = append(samples, sample{h: h, o: o,
			ext: [2]uint64{o.ext.total.Swap(0), o.ext.success.Swap(0)},
			loc: [2]uint64{o.local.total.Swap(0), o.local.success.Swap(0)}})
	}
	for local := range 2 {
		if local == 1 && !d.split {
			break
		}
		var sr, fp []struct {
			h    *Host
			o    *outlierHost
			rate float64
		}
		d.srNums[local][0].Store(minusOne)
		d.srNums[local][1].Store(minusOne)
		if uint64(len(d.hosts)) < d.srMinHosts && uint64(len(d.hosts)) < d.fpMinHosts {
			break
		}
		sum := 0.0
		for _, s := range samples {
			v := s.ext
			if local == 1 {
				v = s.loc
			}
			if s.h.flags.load(fFailedOutlier) || v[0] == 0 {
				continue
			}
			rate := 100 * float64(v[1]) / float64(v[0])
			if v[0] >= min(d.srVolume, d.fpVolume) {
				if local == 1 {
					s.o.srLocal.Store(math.Float64bits(rate))
				} else {
					s.o.srExt.Store(math.Float64bits(rate))
				}
			}
			e := struct {
				h    *Host
				o    *outlierHost
				rate float64
			}{s.h, s.o, rate}
			if v[0] >= d.srVolume {
				sr = append(sr, e)
				sum += rate
			}
			if v[0] >= d.fpVolume {
				fp = append(fp, e)
			}
		}
		srType, fpType := ejSuccessRate, ejFailurePercentage
		if local == 1 {
			srType, fpType = ejSuccessRateLocal, ejFailurePercentageLocal
		}
		if len(sr) > 0 && uint64(len(sr)) >= d.srMinHosts {
			mean := sum / float64(len(sr))
			variance := 0.0
			for _, e := range sr {
				variance += (e.rate - mean) * (e.rate - mean)
			}
			threshold := mean - d.srStdev*math.Sqrt(variance/float64(len(sr)))
			d.srNums[local][0].Store(math.Float64bits(mean))
			d.srNums[local][1].Store(math.Float64bits(threshold))
			for _, e := range sr {
				if e.rate < threshold && !e.h.flags.load(fFailedOutlier) {
					d.stats.Detected[srType].Inc()
					changed = d.ejectLocked(e.h, e.o, srType) || changed
				}
			}
		}
		if len(fp) > 0 && uint64(len(fp)) >= d.fpMinHosts {
			for _, e := range fp {
				if 100-e.rate >= d.fpThreshold && !e.h.flags.load(fFailedOutlier) {
					d.stats.Detected[fpType].Inc()
					changed = d.ejectLocked(e.h, e.o, fpType) || changed
				}
			}
		}
	}
	d.mu.Unlock()
	if changed {
		d.c.RefreshHealth()
	}
}

func (d *outlierDetector) unejectLocked(h *Host, o *outlierHost) {
	d.active--
	d.stats.EjectionsActive.Set(d.active)
	h.flags.store(fFailedOutlier, false)
	o.c5xx.Store(0)
	o.cGateway.Store(0)
	o.cLocal.Store(0)
}

// onHealthCheckSuccess unejects h after a successful active health check
// when successful_active_health_check_uneject_host (default true) allows.
func (d *outlierDetector) onHealthCheckSuccess(h *Host) bool {
	if !d.hcUneject || !h.flags.load(fFailedOutlier) {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	o := d.hosts[h]
	if o == nil || !h.flags.load(fFailedOutlier) {
		return false
	}
	d.unejectLocked(h, o)
	return true
}

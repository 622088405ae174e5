package upstream

import (
	"fmt"
	"math"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	lrv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	rrv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

type lbKind uint8

const (
	lbRoundRobin lbKind = iota
	lbRandom
	lbLeastRequest
	lbRingHash
	lbMaglev
)

// Envoy's load balancer defaults and limits.
const (
	defaultChoiceCount    = 2
	defaultMinRingSize    = 1024
	defaultMaxRingSize    = 8 * 1024 * 1024
	maxRingSizeLimit      = 8 * 1024 * 1024
	defaultMaglevSize     = 65537
	defaultMinClusterSize = 6
	maxMaglevTableLimit   = 5000011
)

// lbConfig is a cluster's compiled load balancing policy. The zero value is
// ROUND_ROBIN.
type lbConfig struct {
	kind lbKind

	// LEAST_REQUEST.
	choiceCount uint32  // hosts sampled per pick; 0 means 2
	bias        float64 // active_request_bias; used only when weights differ
	fullScan    bool    // enable_full_scan: scan all hosts when choiceCount >= len
	scanAlways  bool    // selection_method FULL_SCAN

	// RING_HASH and MAGLEV.
	minRing, maxRing uint64
	murmur           bool // hash_function MURMUR_HASH_2 (ring hash only)
	useHostname      bool // hash the hostname instead of the address
	tableSize        uint64

	// loc is the locality load balancing (locality weights, zone aware
	// routing); nil means neither, as in unit tests.
	loc *localityLB

	// gauges are the hash policy's; nil for other policies (and in unit
	// tests).
	gauges *hashGauges
}

// hashGauges are ring_hash_lb.{size,min_hashes_per_host,max_hashes_per_host}
// or maglev_lb.{min,max}_entries_per_host (size nil).
type hashGauges struct{ size, min, max *stats.Gauge }

func (l *lbConfig) hashed() bool { return l.kind == lbRingHash || l.kind == lbMaglev }

// compileLB reads lb_policy with lb_config, or load_balancing_policy, as
// Envoy does; errors name the field.
func compileLB(cfg *clusterv3.Cluster, scope stats.Scope) (*lbConfig, error) {
	l := &lbConfig{choiceCount: defaultChoiceCount, bias: 1, minRing: defaultMinRingSize,
		maxRing: defaultMaxRingSize, tableSize: defaultMaglevSize,
		loc: &localityLB{routingEnabled: 100, minClusterSize: defaultMinClusterSize}}
	if ch := cfg.GetCommonLbConfig().GetConsistentHashingLbConfig(); ch != nil {
		if ch.GetHashBalanceFactor() != nil {
			return nil, fmt.Errorf("common_lb_config.consistent_hashing_lb_config.hash_balance_factor is not supported yet")
		}
		l.useHostname = ch.GetUseHostnameForHashing()
	}
	if lbp := cfg.GetLoadBalancingPolicy(); lbp != nil {
		if err := l.typed(lbp); err != nil {
			return nil, err
		}
	} else if err := l.legacy(cfg); err != nil {
		return nil, err
	} else if err := l.legacyLocality(cfg.GetCommonLbConfig()); err != nil {
		return nil, err
	}
	switch l.kind {
	case lbRingHash:
		if l.minRing > l.maxRing {
			return nil, fmt.Errorf("ring hash: minimum_ring_size (%d) > maximum_ring_size (%d)", l.minRing, l.maxRing)
		}
		l.gauges = new(hashGauges)
		scope.Scope("ring_hash_lb").Block(ringHashLayout).Fill(l.gauges.fillRingHash)
	case lbMaglev:
		if !isPrime(l.tableSize) {
			return nil, fmt.Errorf("The table size of maglev must be prime number")
		}
		l.gauges = new(hashGauges)
		scope.Scope("maglev_lb").Block(maglevLayout).Fill(l.gauges.fillMaglev)
	}
	return l, nil
}

// The ring_hash_lb.* and maglev_lb.* gauges of a cluster.
var (
	ringHashLayout = stats.LayoutOf((&hashGauges{}).fillRingHash)
	maglevLayout   = stats.LayoutOf((&hashGauges{}).fillMaglev)
)

func (h *hashGauges) fillRingHash(_ func(string) *stats.Counter, g func(string) *stats.Gauge) {
	h.size, h.min, h.max = g("size"), g("min_hashes_per_host"), g("max_hashes_per_host")
}

func (h *hashGauges) fillMaglev(_ func(string) *stats.Counter, g func(string) *stats.Gauge) {
	h.min, h.max = g("min_entries_per_host"), g("max_entries_per_host")
}

func (l *lbConfig) legacy(cfg *clusterv3.Cluster) error {
	switch p := cfg.GetLbPolicy(); p {
	case clusterv3.Cluster_ROUND_ROBIN:
		l.kind = lbRoundRobin
		if rc := cfg.GetRoundRobinLbConfig(); rc.GetSlowStartConfig() != nil {
			return fmt.Errorf("round_robin_lb_config.slow_start_config is not supported yet")
		}
	case clusterv3.Cluster_RANDOM:
		l.kind = lbRandom
	case clusterv3.Cluster_LEAST_REQUEST:
		l.kind = lbLeastRequest
		if lc := cfg.GetLeastRequestLbConfig(); lc != nil {
			if lc.GetSlowStartConfig() != nil {
				return fmt.Errorf("least_request_lb_config.slow_start_config is not supported yet")
			}
			if v := lc.GetChoiceCount(); v != nil {
				l.choiceCount = v.GetValue()
			}
			if v := lc.GetActiveRequestBias(); v != nil {
				l.bias = v.GetDefaultValue()
			}
		}
	case clusterv3.Cluster_RING_HASH:
		l.kind = lbRingHash
		if rc := cfg.GetRingHashLbConfig(); rc != nil {
			l.murmur = rc.GetHashFunction() == clusterv3.Cluster_RingHashLbConfig_MURMUR_HASH_2
			if v := rc.GetMinimumRingSize(); v != nil {
				l.minRing = v.GetValue()
			}
			if v := rc.GetMaximumRingSize(); v != nil {
				l.maxRing = v.GetValue()
			}
		}
	case clusterv3.Cluster_MAGLEV:
		l.kind = lbMaglev
		if v := cfg.GetMaglevLbConfig().GetTableSize(); v != nil {
			l.tableSize = v.GetValue()
		}
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		// The cluster chooses its hosts itself (ORIGINAL_DST); the host
		// set's round robin is never asked.
		if !isOriginalDst(cfg) {
			return fmt.Errorf("lb_policy: LB policy CLUSTER_PROVIDED is not valid for Cluster type %s. 'CLUSTER_PROVIDED' is allowed only with cluster type 'ORIGINAL_DST'", cfg.GetType())
		}
		l.kind = lbRoundRobin
	default:
		return fmt.Errorf("lb_policy %s is not supported yet", p)
	}
	return nil
}

// typed applies the first policy of load_balancing_policy this build knows,
// as Envoy picks the first registered factory.
func (l *lbConfig) typed(lbp *clusterv3.LoadBalancingPolicy) error {
	var names []string
	for i, p := range lbp.GetPolicies() {
		tec := p.GetTypedExtensionConfig()
		path := fmt.Sprintf("load_balancing_policy.policies[%d].typed_extension_config", i)
		names = append(names, tec.GetName())
		msg, err := tec.GetTypedConfig().UnmarshalNew()
		if err != nil {
			continue // unknown type: Envoy tries the next policy
		}
		if err := l.fromTyped(msg, path); err != nil {
			return err
		}
		if l.kind != 255 {
			return nil
		}
	}
	return fmt.Errorf("load_balancing_policy: didn't find a registered load balancer factory implementation with names from %v", names)
}

func (l *lbConfig) fromTyped(msg proto.Message, path string) error {
	unsupported := func(field string) error {
		return fmt.Errorf("%s.typed_config.%s is not supported yet", path, field)
	}
	switch m := msg.(type) {
	case *rrv3.RoundRobin:
		if m.GetSlowStartConfig() != nil {
			return unsupported("slow_start_config")
		}
		if err := l.typedLocality(m.GetLocalityLbConfig(), path); err != nil {
			return err
		}
		l.kind = lbRoundRobin
	case *randomv3.Random:
		if err := l.typedLocality(m.GetLocalityLbConfig(), path); err != nil {
			return err
		}
		l.kind = lbRandom
	case *lrv3.LeastRequest:
		if m.GetSlowStartConfig() != nil {
			return unsupported("slow_start_config")
		}
		if err := l.typedLocality(m.GetLocalityLbConfig(), path); err != nil {
			return err
		}
		l.kind = lbLeastRequest
		if v := m.GetChoiceCount(); v != nil {
			l.choiceCount = v.GetValue()
		}
		if v := m.GetActiveRequestBias(); v != nil {
			l.bias = v.GetDefaultValue()
		}
		l.fullScan = m.GetEnableFullScan().GetValue()
		l.scanAlways = m.GetSelectionMethod() == lrv3.LeastRequest_FULL_SCAN
	case *ringv3.RingHash:
		if m.GetHashBalanceFactor() != nil || m.GetConsistentHashingLbConfig().GetHashBalanceFactor() != nil {
			return unsupported("hash_balance_factor")
		}
		l.kind = lbRingHash
		l.hashLocalityWeighted(m.GetLocalityWeightedLbConfig() != nil)
		l.murmur = m.GetHashFunction() == ringv3.RingHash_MURMUR_HASH_2
		if v := m.GetMinimumRingSize(); v != nil {
			l.minRing = v.GetValue()
		}
		if v := m.GetMaximumRingSize(); v != nil {
			l.maxRing = v.GetValue()
		}
		l.useHostname = l.useHostname || m.GetUseHostnameForHashing() || m.GetConsistentHashingLbConfig().GetUseHostnameForHashing()
	case *maglevv3.Maglev:
		if m.GetConsistentHashingLbConfig().GetHashBalanceFactor() != nil {
			return unsupported("consistent_hashing_lb_config.hash_balance_factor")
		}
		l.kind = lbMaglev
		l.hashLocalityWeighted(m.GetLocalityWeightedLbConfig() != nil)
		if v := m.GetTableSize(); v != nil {
			l.tableSize = v.GetValue()
		}
		l.useHostname = l.useHostname || m.GetConsistentHashingLbConfig().GetUseHostnameForHashing()
	default:
		l.kind = 255 // not one of ours: try the next policy
		return nil
	}
	if err := msg.(interface{ Validate() error }).Validate(); err != nil {
		return fmt.Errorf("%s.typed_config: %w", path, err)
	}
	return nil
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d <= uint64(math.Sqrt(float64(n))); d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// legacyLocality reads common_lb_config's locality_weighted_lb_config or
// zone_aware_lb_config, as Envoy's localityLbConfigFromCommonLbConfig.
func (l *lbConfig) legacyLocality(cc *clusterv3.Cluster_CommonLbConfig) error {
	if cc.GetLocalityWeightedLbConfig() != nil {
		// With RING_HASH and MAGLEV the ring (table) weighs each host by its
		// locality's weight (newHashPicker).
		l.loc.weighted = true
	}
	if z := cc.GetZoneAwareLbConfig(); z != nil {
		l.zoneAware(z.GetRoutingEnabled(), z.GetMinClusterSize(), z.GetFailTrafficOnPanic())
	}
	return nil
}

// typedLocality reads a typed policy's locality_lb_config.
func (l *lbConfig) typedLocality(lc *commonv3.LocalityLbConfig, path string) error {
	if lc == nil {
		return nil
	}
	if lc.GetLocalityWeightedLbConfig() != nil {
		l.loc.weighted = true
	}
	if z := lc.GetZoneAwareLbConfig(); z != nil {
		zp := path + ".typed_config.locality_lb_config.zone_aware_lb_config"
		if z.GetForceLocalZone() != nil {
			return fmt.Errorf("%s.force_local_zone is not supported yet", zp)
		}
		if z.GetLocalityBasis() != commonv3.LocalityLbConfig_ZoneAwareLbConfig_HEALTHY_HOSTS_NUM {
			return fmt.Errorf("%s.locality_basis %s is not supported yet", zp, z.GetLocalityBasis())
		}
		l.zoneAware(z.GetRoutingEnabled(), z.GetMinClusterSize(), z.GetFailTrafficOnPanic())
		l.loc.forceDirect = z.GetForceLocalityDirectRouting()
	}
	return nil
}

func (l *lbConfig) zoneAware(enabled *typev3.Percent, minSize *wrapperspb.UInt64Value, failOnPanic bool) {
	if enabled != nil {
		l.loc.routingEnabled = min(100, uint64(math.Round(enabled.GetValue())))
	}
	if minSize != nil {
		l.loc.minClusterSize = minSize.GetValue()
	}
	l.loc.failOnPanic = failOnPanic
}

// hashLocalityWeighted records a RingHash or Maglev policy's
// locality_weighted_lb_config: the ring (table) then weighs each host by
// its locality's weight, as Envoy's normalizeLocalityWeights.
func (l *lbConfig) hashLocalityWeighted(on bool) {
	if on {
		l.loc.weighted = true
	}
}

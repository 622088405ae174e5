package upstream

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestDNSBackOff: dns_refresh_rate plus up to dns_jitter after a good round;
// after failed rounds, Envoy's jittered exponential back-off from
// dns_failure_refresh_rate.base_interval, its ceiling base·(2^n−1) capped at
// max_interval, reset by a good round.
func TestDNSBackOff(t *testing.T) {
	const base, maxI, refresh, jitter = 100 * time.Millisecond, time.Second, 5 * time.Second, 500 * time.Millisecond
	c := &Cluster{x: &clusterExtras{dns: &dnsSettings{refresh: refresh, failure: base, failureMax: maxI, jitter: jitter}}}
	b := dnsBackOff{c: c}
	sample := func(ok bool, lo, hi time.Duration) {
		t.Helper()
		top := time.Duration(0)
		for range 200 {
			save := b.tries
			d := b.next(ok)
			b.tries = save // the same step each time
			if d < lo || d > hi {
				t.Fatalf("ok=%v tries=%d: %v outside [%v, %v]", ok, b.tries, d, lo, hi)
			}
			top = max(top, d)
		}
		if top <= lo+(hi-lo)/2 { // 200 uniform samples all in the lower half: not random over the range
			t.Errorf("ok=%v tries=%d: largest of 200 waits %v, want some above the middle of [%v, %v]", ok, b.tries, top, lo, hi)
		}
		b.next(ok) // advance
	}
	sample(true, refresh, refresh+jitter)
	sample(false, 0, base)   // ceiling base·1
	sample(false, 0, 3*base) // base·3
	sample(false, 0, 7*base) // base·7
	sample(false, 0, maxI)   // base·15 > max_interval: capped
	sample(false, 0, maxI)
	sample(true, refresh, refresh+jitter)
	if b.tries != 0 {
		t.Errorf("a good round did not reset the back-off (tries %d)", b.tries)
	}
	sample(false, 0, base)

	// Without dns_failure_refresh_rate a failed round waits dns_refresh_rate.
	c2 := &Cluster{x: &clusterExtras{dns: &dnsSettings{refresh: refresh, failure: refresh}}}
	b2 := dnsBackOff{c: c2}
	if d := b2.next(false); d != refresh {
		t.Errorf("failure without dns_failure_refresh_rate: %v, want %v", d, refresh)
	}
}

// hangingResolver answers nothing until its lookup's context ends.
type hangingResolver struct{}

func (hangingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// wait_for_warm_on_init false: a DNS cluster is initialized before its first
// resolution; by default it waits for it.
func TestWaitForWarmOnInit(t *testing.T) {
	for _, wait := range []bool{true, false} {
		m, _ := newTestManager(t)
		m.Resolver = hangingResolver{}
		js := fmt.Sprintf(`{"name":"w","type":"STRICT_DNS","wait_for_warm_on_init":%v,"load_assignment":{"cluster_name":"w","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"hang.test","port_value":80}}}}]}]}}`, wait)
		c := mustAdd(t, m, js)
		select {
		case <-c.Initialized():
			if wait {
				t.Error("initialized before its first resolution, with wait_for_warm_on_init true")
			}
		case <-time.After(100 * time.Millisecond):
			if !wait {
				t.Error("not initialized at once, with wait_for_warm_on_init false")
			}
		}
	}
}

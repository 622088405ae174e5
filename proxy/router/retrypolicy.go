package router

import (
	"errors"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// checkRetryPolicy refuses what Envoy's RetryPolicyImpl refuses: a
// retry_back_off max_interval below base_interval (both rounded up to
// whole milliseconds, at least one).
func checkRetryPolicy(p *routev3.RetryPolicy) error {
	b := p.GetRetryBackOff()
	if b == nil || b.GetMaxInterval() == nil {
		return nil
	}
	ms := func(d time.Duration) time.Duration { return max(d.Truncate(time.Millisecond), time.Millisecond) }
	if ms(b.GetMaxInterval().AsDuration()) < ms(b.GetBaseInterval().AsDuration()) {
		return errors.New("retry_policy.retry_back_off.max_interval: must be greater than or equal to the base_interval")
	}
	return nil
}

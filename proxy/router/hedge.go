package router

import (
	"errors"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// checkHedgePolicy refuses the hedge_policy fields Envoy does not implement
// either (initial_requests above one, additional_request_chance): only
// hedge_on_per_try_timeout has an effect.
func checkHedgePolicy(h *routev3.HedgePolicy) error {
	switch {
	case h == nil:
		return nil
	case h.GetInitialRequests() != nil && h.GetInitialRequests().GetValue() != 1:
		return errors.New("hedge_policy.initial_requests: not supported (not implemented by Envoy)")
	case h.GetAdditionalRequestChance().GetNumerator() != 0:
		return errors.New("hedge_policy.additional_request_chance: not supported (not implemented by Envoy)")
	}
	return nil
}

// HedgeOnPerTryTimeout is hedge_policy.hedge_on_per_try_timeout of the
// route, else of its virtual host (a route's hedge_policy replaces the
// virtual host's whole).
func (r *Route) HedgeOnPerTryTimeout() bool {
	if r.ext != nil && r.ext.hedgePolicy != nil {
		return r.ext.hedgePolicy.GetHedgeOnPerTryTimeout()
	}
	if r.vh != nil {
		return r.vh.hedgeOnPerTryTimeout
	}
	return false
}

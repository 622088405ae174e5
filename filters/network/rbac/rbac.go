// Package rbac is Envoy's RBAC network filter (envoy.filters.network.rbac):
// it evaluates shadow rules (stats only) and the enforced rules on the
// connection's addresses, SNI and TLS peer identity, and closes a denied
// connection before the terminal filter sees it. Header and url_path rules
// never match here, as in Envoy.
package rbac

import (
	"errors"
	"fmt"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	common "github.com/outrider-proxy/outrider/filters/common/rbac"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name.
const Name = "envoy.filters.network.rbac"

func init() {
	netfilter.Registry.Register(Name, []string{"envoy.extensions.filters.network.rbac.v3.RBAC"}, create)
}

// Filter is a compiled network RBAC, shared by every connection of its
// filter chain. A nil engine does not apply.
type Filter struct {
	enforced, shadow *common.Engine
	stats            *common.Stats
}

func create(ctx *netfilter.Context, a *anypb.Any) (any, error) {
	m := &rbacv3.RBAC{}
	if a != nil {
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	store := ctx.Stats
	if store == nil {
		store = stats.NewStore()
	}
	return Compile(m, store)
}

// Compile compiles m, creating its counters in store. Errors name the field.
func Compile(m *rbacv3.RBAC, store *stats.Store) (*Filter, error) {
	if err := confcheck.Fields(m, "", "rules", "shadow_rules", "shadow_rules_stat_prefix", "stat_prefix",
		"enforcement_type"); err != nil {
		return nil, err
	}
	if m.GetStatPrefix() == "" {
		return nil, errors.New("stat_prefix: required")
	}
	f := &Filter{stats: common.NewStats(store, m.GetStatPrefix(), "", m.GetShadowRulesStatPrefix())}
	var err error
	if f.enforced, err = common.Compile(m.GetRules()); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if f.shadow, err = common.Compile(m.GetShadowRules()); err != nil {
		return nil, fmt.Errorf("shadow_rules: %w", err)
	}
	return f, nil
}

// errDenied closes a connection the enforced rules deny.
var errDenied = errors.New("rbac: connection denied")

// OnConnection evaluates the rules once per connection. Envoy waits for
// the first bytes from the client; the decision depends only on the
// connection, so outrider decides when it is accepted (and counts a
// connection that never sends data).
func (f *Filter) OnConnection(c *netfilter.Conn) error {
	in := &common.Input{Conn: c.Info}
	if f.shadow != nil {
		if ok, _ := f.shadow.Allowed(in); ok {
			f.stats.ShadowAllowed.Inc()
		} else {
			f.stats.ShadowDenied.Inc()
		}
	}
	if f.enforced == nil {
		return nil
	}
	if ok, policy := f.enforced.Allowed(in); !ok {
		f.stats.Denied.Inc()
		return fmt.Errorf("%w (%s)", errDenied, common.ResponseDetail(policy))
	}
	f.stats.Allowed.Inc()
	return nil
}

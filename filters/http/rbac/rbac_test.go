package rbac

import (
	"strings"
	"testing"

	cfgrbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func TestCreate(t *testing.T) {
	ctx := &httpfilter.Context{Stats: stats.NewStore(), StatPrefix: "http.in."}
	bad, _ := anypb.New(&rbacv3.RBAC{ShadowRules: &cfgrbacv3.RBAC{Policies: map[string]*cfgrbacv3.Policy{"m": {
		Permissions: []*cfgrbacv3.Permission{{Rule: &cfgrbacv3.Permission_Metadata{}}},
		Principals:  []*cfgrbacv3.Principal{{Identifier: &cfgrbacv3.Principal_Any{Any: true}}}}}}})
	if _, err := create(ctx, bad); err == nil || !strings.Contains(err.Error(), `shadow_rules: policies["m"].permissions[0]: metadata`) {
		t.Fatalf("metadata permission: %v", err)
	}
	matcher, _ := anypb.New(&rbacv3.RBAC{RulesStatPrefix: "r.", TrackPerRuleStats: true})
	if _, err := create(ctx, matcher); err == nil || !strings.Contains(err.Error(), "track_per_rule_stats") {
		t.Fatalf("unsupported field: %v", err)
	}
	good, _ := anypb.New(&rbacv3.RBAC{RulesStatPrefix: "r.", Rules: &cfgrbacv3.RBAC{}})
	c, err := create(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if n := c.(*config).stats.Denied.Name(); n != "http.in.rbac.r.denied" {
		t.Fatalf("denied counter %q", n)
	}
	// A broken per-route config denies; an empty one disables the filter.
	junk, _ := anypb.New(&rbacv3.RBAC{})
	if e := c.(*config).routeEngines(junk); e.enforced != denyAll {
		t.Fatalf("invalid per-route config does not deny")
	}
	empty, _ := anypb.New(&rbacv3.RBACPerRoute{})
	if e := c.(*config).routeEngines(empty); e.enforced != nil || e.shadow != nil {
		t.Fatalf("empty per-route config does not disable")
	}
}

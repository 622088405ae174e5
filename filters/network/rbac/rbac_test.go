package rbac

import (
	"net/netip"
	"strings"
	"testing"

	cfgrbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"

	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func TestCompileErrors(t *testing.T) {
	store := stats.NewStore()
	for _, tt := range []struct {
		m    *rbacv3.RBAC
		want string
	}{
		{&rbacv3.RBAC{}, "stat_prefix: required"},
		{&rbacv3.RBAC{StatPrefix: "x", Rules: &cfgrbacv3.RBAC{Policies: map[string]*cfgrbacv3.Policy{"p": {
			Permissions: []*cfgrbacv3.Permission{{Rule: &cfgrbacv3.Permission_Any{Any: true}}},
			Principals:  []*cfgrbacv3.Principal{{Identifier: &cfgrbacv3.Principal_FilterState{}}}}}}}, `rules: policies["p"].principals[0]: filter_state`},
		{&rbacv3.RBAC{StatPrefix: "x", ShadowRules: &cfgrbacv3.RBAC{Policies: map[string]*cfgrbacv3.Policy{"p": {}}}}, ""},
	} {
		_, err := Compile(tt.m, store)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Compile(%v) = %v, want %q", tt.m, err, tt.want)
		}
	}
}

func TestOnConnection(t *testing.T) {
	store := stats.NewStore()
	f, err := Compile(&rbacv3.RBAC{StatPrefix: "n", Rules: &cfgrbacv3.RBAC{Action: cfgrbacv3.RBAC_ALLOW, Policies: map[string]*cfgrbacv3.Policy{"sni": {
		Permissions: []*cfgrbacv3.Permission{{Rule: &cfgrbacv3.Permission_DestinationPort{DestinationPort: 443}}},
		Principals:  []*cfgrbacv3.Principal{{Identifier: &cfgrbacv3.Principal_Authenticated_{Authenticated: &cfgrbacv3.Principal_Authenticated{}}}}}}}}, store)
	if err != nil {
		t.Fatal(err)
	}
	tlsConn := &netfilter.Conn{Info: &streaminfo.Conn{LocalAddr: netip.MustParseAddrPort("1.2.3.4:443"), TLS: &streaminfo.TLSInfo{}}}
	plain := &netfilter.Conn{Info: &streaminfo.Conn{LocalAddr: netip.MustParseAddrPort("1.2.3.4:443")}}
	if err := f.OnConnection(tlsConn); err != nil {
		t.Fatalf("TLS connection denied: %v", err)
	}
	if err := f.OnConnection(plain); err == nil || !strings.Contains(err.Error(), "rbac_access_denied_matched_policy[none]") {
		t.Fatalf("plaintext connection: %v", err)
	}
	if f.stats.Allowed.Value() != 1 || f.stats.Denied.Value() != 1 || f.stats.Allowed.Name() != "n.rbac.allowed" {
		t.Fatalf("stats %s=%d denied=%d", f.stats.Allowed.Name(), f.stats.Allowed.Value(), f.stats.Denied.Value())
	}
}

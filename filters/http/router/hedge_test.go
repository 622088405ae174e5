package router

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/router"
)

func routeFrom(t *testing.T, vhostExtra, routeExtra string) *router.Route {
	t.Helper()
	rc := &routev3.RouteConfiguration{}
	js := `{"virtual_hosts":[{"name":"v","domains":["*"]` + vhostExtra + `,"routes":[{"match":{"prefix":"/"},"route":{"cluster":"c"` + routeExtra + `}}]}]}`
	if err := protojson.Unmarshal([]byte(js), rc); err != nil {
		t.Fatal(err)
	}
	tbl, err := router.Compile(rc, router.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var h headers.Map
	h.Set(headers.Authority, "x")
	h.Set(headers.Path, "/")
	r, _ := tbl.Select(&h, 0)
	return r
}

// The route's hedge_policy replaces the virtual host's; Envoy's request
// header overrides both with "true" or "false" and is not forwarded.
func TestSetupHedging(t *testing.T) {
	on, off := `,"hedge_policy":{"hedge_on_per_try_timeout":true}`, `,"hedge_policy":{}`
	tests := []struct {
		name, vhost, route string
		header             string // "" for none
		want               bool
	}{
		{"none", "", "", "", false},
		{"route", "", on, "", true},
		{"virtual host", on, "", "", true},
		{"route replaces virtual host", on, off, "", false},
		{"header turns on", "", "", "true", true},
		{"header turns off", on, "", "false", false},
		{"other header values ignored", "", on, "yes", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cb := &fakeCallbacks{}
			if tt.header != "" {
				cb.req.Set(hedgeHeader, tt.header)
			}
			f := &filter{cb: cb, route: routeFrom(t, tt.vhost, tt.route)}
			f.setupHedging()
			if f.res.hedge != tt.want {
				t.Errorf("hedge = %v, want %v", f.res.hedge, tt.want)
			}
			if cb.req.Has(hedgeHeader) {
				t.Error("the hedge header would be forwarded")
			}
		})
	}
}

package server

import (
	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// inlineScopedDump appends to out the inline scoped_route_configurations_list
// of every connection manager of ls, once per scoped_routes name, as
// config_dump's inline_scoped_route_configs.
func inlineScopedDump(out *adminv3.ScopedRoutesConfigDump, ls []*listenerv3.Listener, updated *timestamppb.Timestamp) {
	seen := map[string]bool{}
	for _, e := range out.InlineScopedRouteConfigs {
		seen[e.GetName()] = true
	}
	for _, l := range ls {
		chains := l.GetFilterChains()
		if dc := l.GetDefaultFilterChain(); dc != nil {
			chains = append(chains[:len(chains):len(chains)], dc)
		}
		for _, fc := range chains {
			for _, f := range fc.GetFilters() {
				h := &hcmv3.HttpConnectionManager{}
				if !f.GetTypedConfig().MessageIs(h) || f.GetTypedConfig().UnmarshalTo(h) != nil {
					continue
				}
				sr := h.GetScopedRoutes()
				list := sr.GetScopedRouteConfigurationsList()
				if list == nil || seen[sr.GetName()] {
					continue
				}
				seen[sr.GetName()] = true
				e := &adminv3.ScopedRoutesConfigDump_InlineScopedRouteConfigs{Name: sr.GetName(), LastUpdated: updated}
				for _, sc := range list.GetScopedRouteConfigurations() {
					a, _ := anypb.New(sc)
					e.ScopedRouteConfigs = append(e.ScopedRouteConfigs, a)
				}
				out.InlineScopedRouteConfigs = append(out.InlineScopedRouteConfigs, e)
			}
		}
	}
}

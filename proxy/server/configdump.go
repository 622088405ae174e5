package server

import (
	"fmt"
	"net/http"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// configDumps builds Envoy's config dump messages in Envoy's order:
// bootstrap, clusters, endpoints (only with include_eds), listeners, scoped
// routes, routes, secrets.
func (s *Server) configDumps(includeEDS bool) []proto.Message {
	now := timestamppb.New(s.started)
	boot := &adminv3.BootstrapConfigDump{Bootstrap: s.opts.Bootstrap, LastUpdated: now}
	cl := &adminv3.ClustersConfigDump{}
	eps := &adminv3.EndpointsConfigDump{}
	for _, c := range s.opts.Bootstrap.GetStaticResources().GetClusters() {
		a, _ := anypb.New(c)
		cl.StaticClusters = append(cl.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{Cluster: a, LastUpdated: now})
		if la := c.GetLoadAssignment(); la != nil {
			ea, _ := anypb.New(la)
			eps.StaticEndpointConfigs = append(eps.StaticEndpointConfigs, &adminv3.EndpointsConfigDump_StaticEndpointConfig{EndpointConfig: ea, LastUpdated: now})
		}
	}
	ls := &adminv3.ListenersConfigDump{}
	rt := &adminv3.RoutesConfigDump{}
	for _, l := range s.opts.Bootstrap.GetStaticResources().GetListeners() {
		a, _ := anypb.New(l)
		ls.StaticListeners = append(ls.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{Listener: a, LastUpdated: now})
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				h := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(h) && f.GetTypedConfig().UnmarshalTo(h) == nil && h.GetRouteConfig() != nil {
					ra, _ := anypb.New(h.GetRouteConfig())
					rt.StaticRouteConfigs = append(rt.StaticRouteConfigs, &adminv3.RoutesConfigDump_StaticRouteConfig{RouteConfig: ra, LastUpdated: now})
				}
			}
		}
	}
	srd := &adminv3.ScopedRoutesConfigDump{}
	inlineScopedDump(srd, s.opts.Bootstrap.GetStaticResources().GetListeners(), now)
	if s.dyn != nil {
		s.dyn.dump(cl, ls, rt, eps)
		s.dyn.dumpScoped(srd)
	}
	out := []proto.Message{boot, cl}
	if includeEDS {
		out = append(out, eps)
	}
	return append(out, ls, srd, rt, s.secretsDump())
}

// handleConfigDump is Envoy's /config_dump: ?include_eds adds the
// endpoints, ?resource=FIELD lists the elements of that repeated field of
// the dumps (404 when no dump has it), ?mask=PATHS (a comma-separated field
// mask) trims each dump, or each listed element with ?resource.
func (s *Server) handleConfigDump(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var mask []string
	if m := q.Get("mask"); m != "" {
		mask = strings.Split(m, ",")
	}
	dump := &adminv3.ConfigDump{}
	resource := q.Get("resource")
	for _, m := range s.configDumps(q.Has("include_eds")) {
		if resource == "" {
			if mask != nil {
				trimMessage(m.ProtoReflect(), mask)
			}
			a, err := anypb.New(m)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			dump.Configs = append(dump.Configs, a)
			continue
		}
		fd := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(resource))
		if fd == nil {
			continue
		}
		if !fd.IsList() || fd.Message() == nil {
			w.Header().Set("X-Content-Type-Options", "nosniff")
			http.Error(w, fmt.Sprintf("%s is not a repeated field. Use ?mask=%s to get only this field", resource, resource), http.StatusBadRequest)
			return
		}
		list := m.ProtoReflect().Get(fd).List()
		for i := 0; i < list.Len(); i++ {
			el := list.Get(i).Message()
			if mask != nil {
				trimMessage(el, mask)
			}
			a, err := anypb.New(el.Interface())
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			dump.Configs = append(dump.Configs, a)
		}
		writeJSON(w, dump)
		return
	}
	if resource != "" {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		http.Error(w, resource+" not found in config dump", http.StatusNotFound)
		return
	}
	writeJSON(w, dump)
}

// trimMessage keeps only the fields of m named by the field mask paths
// ("a.b" keeps b of message field a; a list of messages is trimmed element
// by element), as protobuf's FieldMaskUtil::TrimMessage does.
func trimMessage(m protoreflect.Message, paths []string) {
	keep := map[string][]string{} // top-level field -> sub-paths (nil: whole)
	whole := map[string]bool{}
	for _, p := range paths {
		p = strings.TrimSpace(p)
		head, rest, nested := strings.Cut(p, ".")
		if !nested {
			whole[head] = true
			continue
		}
		keep[head] = append(keep[head], rest)
	}
	var clear []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := string(fd.Name())
		switch {
		case whole[name]:
		case keep[name] != nil && fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Any" && !fd.IsList():
			a := v.Message().Interface().(*anypb.Any)
			if inner, err := a.UnmarshalNew(); err == nil {
				trimMessage(inner.ProtoReflect(), keep[name])
				if na, err := anypb.New(inner); err == nil {
					m.Set(fd, protoreflect.ValueOfMessage(na.ProtoReflect()))
				}
			}
		case keep[name] != nil && fd.Message() != nil && !fd.IsMap():
			if fd.IsList() {
				for i := 0; i < v.List().Len(); i++ {
					trimMessage(v.List().Get(i).Message(), keep[name])
				}
			} else {
				trimMessage(v.Message(), keep[name])
			}
		default:
			clear = append(clear, fd)
		}
		return true
	})
	for _, fd := range clear {
		m.Clear(fd)
	}
}

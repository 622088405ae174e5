package server

import (
	"encoding/json"
	"fmt"
	"net/http"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"

	"github.com/outrider-proxy/outrider/proxy/runtime"
	"github.com/outrider-proxy/outrider/xds/client"
)

// hasRTDS reports whether layered_runtime has an RTDS layer (which needs the xDS side).
func hasRTDS(b *bootstrapv3.Bootstrap) bool {
	for _, l := range b.GetLayeredRuntime().GetLayers() {
		if l.GetRtdsLayer() != nil {
			return true
		}
	}
	return false
}

// rtdsSub is one RTDS layer's subscription, made at configure time and watched at start.
type rtdsSub struct {
	layer runtime.RTDSLayer
	src   source
}

// configureRuntime compiles layered_runtime into s.runtime, makes it the process runtime and finds the
// source of each RTDS layer.
func (s *Server) configureRuntime() error {
	l, err := runtime.New(s.opts.Bootstrap.GetLayeredRuntime(), s.stats)
	if err != nil {
		return err
	}
	s.runtime = l
	for i, r := range l.RTDSLayers() {
		if s.dyn == nil {
			return fmt.Errorf("layered_runtime: rtds layer %q without an xDS client", r.Layer)
		}
		src, err := s.dyn.clientFor(fmt.Sprintf("layered_runtime.layers[%d].rtds_layer.rtds_config", i), r.Source)
		if err != nil {
			return err
		}
		s.rtds = append(s.rtds, rtdsSub{layer: r, src: src})
	}
	runtime.SetProcess(l)
	return nil
}

// startRuntime subscribes the RTDS layers: each Runtime resource replaces its layer's values.
func (s *Server) startRuntime() {
	for _, r := range s.rtds {
		layer, name := r.layer.Layer, r.layer.Resource
		s.dyn.addCancel(r.src.Watch(client.RuntimeType, []string{name}, client.WatcherFunc(func(_ string, u client.Update) error {
			if res, ok := u.Resources[name]; ok {
				rt := res.Msg.(*runtimev3.Runtime)
				if err := s.runtime.SetRTDS(layer, rt.GetLayer()); err != nil {
					return fmt.Errorf("runtime %q: %w", name, err)
				}
				return nil
			}
			for _, n := range u.Removed {
				if n == name {
					return s.runtime.SetRTDS(layer, nil)
				}
			}
			return nil
		})))
	}
}

// runtimeEntry is one key of /runtime.
type runtimeEntry struct {
	LayerValues []string `json:"layer_values"`
	FinalValue  string   `json:"final_value"`
}

// handleRuntime is Envoy's GET /runtime: the layer names and, per key, its value in each layer ("" where
// absent) and the final value.
func (s *Server) handleRuntime(w http.ResponseWriter, _ *http.Request) {
	snap := s.runtime.Snapshot()
	layers := snap.Layers()
	out := struct {
		Layers  []string                `json:"layers"`
		Entries map[string]runtimeEntry `json:"entries"`
	}{Layers: make([]string, len(layers)), Entries: map[string]runtimeEntry{}}
	for i, l := range layers {
		out.Layers[i] = l.Name
	}
	for _, k := range snap.Keys() {
		e := runtimeEntry{LayerValues: make([]string, len(layers))}
		for i, l := range layers {
			if v, ok := l.Values[k]; ok {
				e.LayerValues[i] = v.Raw
			}
		}
		e.FinalValue, _ = snap.Get(k)
		out.Entries[k] = e
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	_ = enc.Encode(out)
}

// handleRuntimeModify is Envoy's POST /runtime_modify?key=value...: admin-layer overrides, an empty
// value removing one. Parameters may also come as a form body.
func (s *Server) handleRuntimeModify(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	kv := map[string]string{}
	for k, vs := range r.Form {
		if len(vs) > 0 {
			kv[k] = vs[len(vs)-1]
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	if len(kv) == 0 {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, "usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n"+
			"       use an empty value to remove a previously added override\n")
		return
	}
	if err := s.runtime.Modify(kv); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "No admin layer specified\n")
		return
	}
	fmt.Fprint(w, "OK\n")
}

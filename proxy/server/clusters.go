package server

import (
	"fmt"
	"net"
	"net/http"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// handleClusters prints /clusters in Envoy's text form (cluster::host::stat::value)
// or, with ?format=json, as envoy.admin.v3.Clusters.
func (s *Server) handleClusters(w http.ResponseWriter, r *http.Request) {
	all := s.clusters.All()
	if r.URL.Query().Get("format") == "json" {
		out := &adminv3.Clusters{}
		for _, c := range all {
			cs := &adminv3.ClusterStatus{Name: c.Name, ObservabilityName: c.Name, AddedViaApi: false}
			for _, h := range c.Hosts() {
				hs := &adminv3.HostStatus{
					Address:      &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: h.Addr.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(h.Addr.Port())}}}},
					Hostname:     h.Hostname,
					Weight:       h.Weight,
					Priority:     uint32(h.Priority),
					Locality:     h.Locality,
					HealthStatus: &adminv3.HostHealthStatus{EdsHealthStatus: h.HealthStatus()},
					SuccessRate:  &typev3.Percent{Value: -1},
				}
				for _, st := range hostStats(h) {
					hs.Stats = append(hs.Stats, &adminv3.SimpleMetric{Name: st.name, Value: st.value, Type: st.typ})
				}
				cs.HostStatuses = append(cs.HostStatuses, hs)
			}
			out.ClusterStatuses = append(out.ClusterStatuses, cs)
		}
		writeJSON(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	for _, c := range all {
		fmt.Fprintf(w, "%s::observability_name::%s\n", c.Name, c.Name)
		for _, p := range []string{"default_priority", "high_priority"} {
			fmt.Fprintf(w, "%s::%s::max_connections::1024\n%s::%s::max_pending_requests::1024\n%s::%s::max_requests::1024\n%s::%s::max_retries::3\n",
				c.Name, p, c.Name, p, c.Name, p, c.Name, p)
		}
		fmt.Fprintf(w, "%s::added_via_api::false\n", c.Name)
		for _, h := range c.Hosts() {
			pre := c.Name + "::" + h.String()
			for _, st := range hostStats(h) {
				fmt.Fprintf(w, "%s::%s::%d\n", pre, st.name, st.value)
			}
			fmt.Fprintf(w, "%s::hostname::%s\n", pre, h.Hostname)
			fmt.Fprintf(w, "%s::health_flags::%s\n", pre, h.HealthFlags())
			fmt.Fprintf(w, "%s::weight::%d\n", pre, h.Weight)
			fmt.Fprintf(w, "%s::region::%s\n%s::zone::%s\n%s::sub_zone::%s\n", pre, h.Locality.GetRegion(), pre, h.Locality.GetZone(), pre, h.Locality.GetSubZone())
			fmt.Fprintf(w, "%s::canary::false\n%s::priority::%d\n", pre, pre, h.Priority)
			fmt.Fprintf(w, "%s::success_rate::-1\n%s::local_origin_success_rate::-1\n", pre, pre)
		}
	}
}

type hostStat struct {
	name  string
	value uint64
	typ   adminv3.SimpleMetric_Type
}

func hostStats(h *upstream.Host) []hostStat {
	c, g := adminv3.SimpleMetric_COUNTER, adminv3.SimpleMetric_GAUGE
	return []hostStat{
		{"cx_active", uint64(max(h.StatsView().CxActive.Load(), 0)), g},
		{"cx_connect_fail", h.StatsView().CxConnectFail.Load(), c},
		{"cx_total", h.StatsView().CxTotal.Load(), c},
		{"rq_active", uint64(max(h.StatsView().RqActive.Load(), 0)), g},
		{"rq_error", h.StatsView().RqError.Load(), c},
		{"rq_success", h.StatsView().RqSuccess.Load(), c},
		{"rq_timeout", h.StatsView().RqTimeout.Load(), c},
		{"rq_total", h.StatsView().RqTotal.Load(), c},
	}
}

func socketAddr(a net.Addr) *corev3.Address {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return nil
	}
	ap := ta.AddrPort()
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ap.Addr().Unmap().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())}}}}
}

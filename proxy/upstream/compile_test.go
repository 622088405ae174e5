package upstream

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCompile(t *testing.T) {
	tests := []struct {
		name    string
		js      string
		wantErr string // substring; empty means success
	}{
		{"static minimal", `{"name":"a","connect_timeout":"1s","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"127.0.0.1","port_value":80}}}}]}]}}`, ""},
		{"type absent is static, no endpoints", `{"name":"a"}`, ""},
		{"static ipv6", `{"name":"a","type":"STATIC","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"::1","port_value":80}}}}]}]}}`, ""},
		{"strict dns", `{"name":"a","type":"STRICT_DNS","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"example.invalid","port_value":80}}}}]}]}}`, ""},
		{"logical dns", `{"name":"a","type":"LOGICAL_DNS","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"example.invalid","port_value":80}}}}]}]}}`, ""},
		{"eds", `{"name":"a","type":"EDS","eds_cluster_config":{"service_name":"svc"}}`, ""},
		{"random", `{"name":"a","lb_policy":"RANDOM"}`, ""},
		{"later features accepted", `{"name":"a","health_checks":[{"timeout":"1s","interval":"1s","unhealthy_threshold":1,"healthy_threshold":1,"tcp_health_check":{}}],"outlier_detection":{},"circuit_breakers":{"thresholds":[{"max_connections":1}]}}`, ""},
		{"load_assignment without cluster_name", `{"name":"a","load_assignment":{"endpoints":[]}}`, `cluster "a": invalid Cluster.LoadAssignment`},
		{"empty name", `{"connect_timeout":"1s"}`, `invalid Cluster.Name`},
		{"zero connect timeout", `{"name":"a","connect_timeout":"0s"}`, `cluster "a": invalid Cluster.ConnectTimeout`},
		{"static hostname", `{"name":"s","type":"STATIC","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"foo.example","port_value":80}}}}]}]}}`,
			`cluster "s": load_assignment.endpoints[0].lb_endpoints[0]: malformed IP address: foo.example`},
		{"logical dns two endpoints", `{"name":"l","type":"LOGICAL_DNS","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"a.example","port_value":80}}}},{"endpoint":{"address":{"socket_address":{"address":"b.example","port_value":80}}}}]}]}}`,
			`cluster "l": load_assignment: LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint`},
		{"logical dns two localities", `{"name":"l","type":"LOGICAL_DNS","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"a.example","port_value":80}}}}]},{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"b.example","port_value":80}}}}]}]}}`,
			`LOGICAL_DNS clusters must have a single locality_lb_endpoint`},
		{"least request", `{"name":"a","lb_policy":"LEAST_REQUEST"}`, ""},
		{"ring hash", `{"name":"a","lb_policy":"RING_HASH"}`, ""},
		{"maglev", `{"name":"a","lb_policy":"MAGLEV"}`, ""},
		{"cluster provided", `{"name":"a","lb_policy":"CLUSTER_PROVIDED"}`, `cluster "a": lb_policy: LB policy CLUSTER_PROVIDED is not valid for Cluster type STATIC`},
		{"load_balancing_policy", `{"name":"a","load_balancing_policy":{"policies":[{"typed_extension_config":{"name":"rr","typed_config":{"@type":"type.googleapis.com/google.protobuf.Empty"}}}]}}`, `cluster "a": load_balancing_policy: didn't find a registered load balancer factory implementation with names from [rr]`},
		{"original dst", `{"name":"o","type":"ORIGINAL_DST","lb_policy":"CLUSTER_PROVIDED"}`, ""},
		{"original dst rr", `{"name":"o","type":"ORIGINAL_DST"}`, `cluster "o": lb_policy: LB policy ROUND_ROBIN is not valid for Cluster type ORIGINAL_DST`},
		{"custom type", `{"name":"x","cluster_type":{"name":"envoy.clusters.aggregate","typed_config":{"@type":"type.googleapis.com/google.protobuf.Empty"}}}`, `cluster "x": cluster_type "envoy.clusters.aggregate": unsupported cluster type`},
		{"udp endpoint", `{"name":"u","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"protocol":"UDP","address":"127.0.0.1","port_value":80}}}}]}]}}`, `protocol: UDP upstreams are not supported`},
		{"pipe endpoint", `{"name":"p","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"pipe":{"path":"/tmp/x"}}}}]}]}}`, `lb_endpoints[0].endpoint.address: only socket_address is supported`},
		{"zero weight", `{"name":"w","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"load_balancing_weight":0,"endpoint":{"address":{"socket_address":{"address":"127.0.0.1","port_value":80}}}}]}]}}`, `LoadBalancingWeight`},
		{"bad bind", `{"name":"b","upstream_bind_config":{"source_address":{"address":"nope","port_value":0}}}`, `cluster "b": upstream_bind_config.source_address: malformed IP address: nope`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			m.Resolver = &fakeResolver{}
			cfg := parseCluster(t, tt.js)
			err := m.AddOrUpdate(cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if m.Get(cfg.GetName()) == nil {
					t.Fatal("cluster not installed")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want containing %q", err, tt.wantErr)
			}
			if m.Get(cfg.GetName()) != nil {
				t.Fatal("failed cluster was installed")
			}
		})
	}
}

func TestCompileOptions(t *testing.T) {
	m, _ := newTestManager(t)
	d := mustAdd(t, m, `{"name":"d"}`)
	if d.ConnectTimeout != 5*time.Second || d.PerConnectionBufferLimit != 1<<20 || d.IdleTimeout != time.Hour || d.MaxRequestsPerConnection != 0 {
		t.Errorf("defaults: timeout %v buffer %d idle %v maxrq %d", d.ConnectTimeout, d.PerConnectionBufferLimit, d.IdleTimeout, d.MaxRequestsPerConnection)
	}
	c := mustAdd(t, m, `{"name":"c","connect_timeout":"0.25s","per_connection_buffer_limit_bytes":32768,
		"common_http_protocol_options":{"idle_timeout":"0s","max_requests_per_connection":7},
		"upstream_bind_config":{"source_address":{"address":"127.0.0.1","port_value":0}},
		"transport_socket":{"name":"envoy.transport_sockets.raw_buffer"}}`)
	if c.ConnectTimeout != 250*time.Millisecond || c.PerConnectionBufferLimit != 32768 || c.IdleTimeout != 0 || c.MaxRequestsPerConnection != 7 {
		t.Errorf("set: timeout %v buffer %d idle %v maxrq %d", c.ConnectTimeout, c.PerConnectionBufferLimit, c.IdleTimeout, c.MaxRequestsPerConnection)
	}
	if c.SourceAddr.String() != "127.0.0.1:0" || c.TransportSocket == nil {
		t.Errorf("source %v transport %v", c.SourceAddr, c.TransportSocket)
	}
	old := mustAdd(t, m, `{"name":"o","max_requests_per_connection":3}`)
	if old.MaxRequestsPerConnection != 3 {
		t.Errorf("deprecated max_requests_per_connection: got %d", old.MaxRequestsPerConnection)
	}
}

func TestUnenforced(t *testing.T) {
	c := parseCluster(t, `{"name":"a","health_checks":[{"timeout":"1s","interval":"1s","unhealthy_threshold":1,"healthy_threshold":1,"tcp_health_check":{}}],
		"outlier_detection":{},"circuit_breakers":{"thresholds":[{"priority":"HIGH"}],"per_host_thresholds":[{"max_connections":1},{"priority":"HIGH","max_connections":1,"max_requests":5}]},"transport_socket":{"name":"tls"},
		"respect_dns_ttl":true,"common_http_protocol_options":{"idle_timeout":"1s","max_connection_duration":"1s"}}`)
	got := Unenforced(c)
	want := []string{"circuit_breakers.per_host_thresholds (other than max_connections)", "respect_dns_ttl"}
	if !slices.Equal(got, want) {
		t.Errorf("Unenforced = %q, want %q", got, want)
	}
	if got := Unenforced(parseCluster(t, `{"name":"a","connect_timeout":"1s","lb_policy":"RANDOM"}`)); len(got) != 0 {
		t.Errorf("plain cluster: Unenforced = %q", got)
	}
}

func TestStatsExistFromStart(t *testing.T) {
	m, st := newTestManager(t)
	mustAdd(t, m, `{"name":"s","alt_stat_name":"alt","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[
		{"endpoint":{"address":{"socket_address":{"address":"10.0.0.1","port_value":80}}}},
		{"health_status":"DEGRADED","endpoint":{"address":{"socket_address":{"address":"10.0.0.2","port_value":80}}}},
		{"health_status":"UNHEALTHY","endpoint":{"address":{"socket_address":{"address":"10.0.0.3","port_value":80}}}}]}]}}`)
	names := map[string]bool{}
	for _, c := range st.Counters() {
		names[c.Name()] = true
	}
	for _, n := range []string{"lb_healthy_panic", "update_success", "update_attempt", "update_no_rebuild", "upstream_cx_total", "upstream_rq_retry", "upstream_cx_none_healthy"} {
		if !names["cluster.alt."+n] {
			t.Errorf("counter cluster.alt.%s missing", n)
		}
	}
	gauges := map[string]int64{}
	for _, g := range st.Gauges() {
		gauges[g.Name()] = g.Value()
	}
	for n, v := range map[string]int64{"membership_total": 3, "membership_healthy": 1, "membership_degraded": 1, "membership_excluded": 0, "upstream_cx_active": 0} {
		if got, ok := gauges["cluster.alt."+n]; !ok || got != v {
			t.Errorf("gauge %s = %d (exists %v), want %d", n, got, ok, v)
		}
	}
}

func TestRecordResponse(t *testing.T) {
	m, st := newTestManager(t)
	c := mustAdd(t, m, `{"name":"r"}`)
	for _, code := range []int{200, 200, 204, 503, 101, 302, 404, 42} {
		c.Stats.RecordResponse(code)
	}
	want := map[string]uint64{"upstream_rq_completed": 8, "upstream_rq_2xx": 3, "upstream_rq_200": 2, "upstream_rq_204": 1,
		"upstream_rq_5xx": 1, "upstream_rq_503": 1, "upstream_rq_1xx": 1, "upstream_rq_3xx": 1, "upstream_rq_4xx": 1, "upstream_rq_404": 1}
	for n, v := range want {
		if got := st.Counter("cluster.r." + n).Value(); got != v {
			t.Errorf("%s = %d, want %d", n, got, v)
		}
	}
	if a := testing.AllocsPerRun(100, func() { c.Stats.RecordResponse(200) }); a != 0 {
		t.Errorf("RecordResponse allocates %v per call after first use", a)
	}
}

func TestManagerAPI(t *testing.T) {
	m, _ := newTestManager(t)
	mustAdd(t, m, `{"name":"b"}`)
	a1 := mustAdd(t, m, `{"name":"a"}`)
	if got := m.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Names = %q", got)
	}
	a2 := mustAdd(t, m, `{"name":"a","lb_policy":"RANDOM"}`)
	if m.Get("a") != a2 || a1 == a2 || !a1.Draining() || a2.Draining() {
		t.Errorf("replace: get %p old %p new %p, old draining %v", m.Get("a"), a1, a2, a1.Draining())
	}
	if err := m.AddOrUpdate(parseCluster(t, `{"name":"a","lb_policy":"CLUSTER_PROVIDED"}`)); err == nil || m.Get("a") != a2 {
		t.Errorf("bad update must keep the old cluster: err %v", err)
	}
	all := m.All()
	if len(all) != 2 || all[0].Name != "a" || all[1].Name != "b" {
		t.Errorf("All = %v", all)
	}
	m.Remove("a")
	m.Remove("nope")
	if m.Get("a") != nil || !a2.Draining() || !slices.Equal(m.Names(), []string{"b"}) {
		t.Errorf("after Remove: names %q", m.Names())
	}
}

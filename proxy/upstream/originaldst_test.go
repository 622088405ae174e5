package upstream

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

func TestOriginalDstCompileErrors(t *testing.T) {
	tests := []struct {
		name, js, want string
	}{
		{"round robin", `{"name":"od","type":"ORIGINAL_DST","lbPolicy":"ROUND_ROBIN","connectTimeout":"1s"}`, "Only 'CLUSTER_PROVIDED'"},
		{"cluster provided on STATIC", `{"name":"od","type":"STATIC","lbPolicy":"CLUSTER_PROVIDED","connectTimeout":"1s"}`, "allowed only with cluster type 'ORIGINAL_DST'"},
		{"endpoints", `{"name":"od","type":"ORIGINAL_DST","lbPolicy":"CLUSTER_PROVIDED","loadAssignment":{"clusterName":"od","endpoints":[{"lbEndpoints":[{"endpoint":{"address":{"socketAddress":{"address":"127.0.0.1","portValue":1}}}}]}]}}`, "must have no load assignment"},
		{"bad port override", `{"name":"od","type":"ORIGINAL_DST","lbPolicy":"CLUSTER_PROVIDED","originalDstLbConfig":{"upstreamPortOverride":70000}}`, "UpstreamPortOverride"},
		{"metadata key", `{"name":"od","type":"ORIGINAL_DST","lbPolicy":"CLUSTER_PROVIDED","originalDstLbConfig":{"metadataKey":{"key":"k","path":[{"key":"a"}]}}}`, "metadata_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			err := m.AddOrUpdate(parseCluster(t, tt.js))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("AddOrUpdate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestOriginalDstChoose(t *testing.T) {
	restored := func(ap string) *streaminfo.Conn {
		return &streaminfo.Conn{LocalAddr: netip.MustParseAddrPort(ap), LocalAddrRestored: true}
	}
	hdr := func(name, v string) *headers.Map {
		h := &headers.Map{}
		h.Add(name, v)
		return h
	}
	const plain = `{"name":"od","type":"ORIGINAL_DST","lbPolicy":"CLUSTER_PROVIDED"}`
	const useHeader = `{"name":"od","type":"ORIGINAL_DST","lbPolicy":"CLUSTER_PROVIDED","originalDstLbConfig":{"useHttpHeader":true}}`
	tests := []struct {
		name        string
		js          string
		ctx         *LBContext
		want        string // "" is no host
		wantInvalid uint64
	}{
		{"restored destination", plain, &LBContext{DownstreamConn: restored("198.18.0.11:9000")}, "198.18.0.11:9000", 0},
		{"v4-mapped destination", plain, &LBContext{DownstreamConn: restored("[::ffff:198.18.0.11]:9000")}, "198.18.0.11:9000", 0},
		{"not restored", plain, &LBContext{DownstreamConn: &streaminfo.Conn{LocalAddr: netip.MustParseAddrPort("127.0.0.1:15001")}}, "", 0},
		{"no connection", plain, &LBContext{}, "", 0},
		{"nil context", plain, nil, "", 0},
		{"header ignored without use_http_header", plain,
			&LBContext{DownstreamConn: restored("10.0.0.1:80"), Headers: hdr("x-envoy-original-dst-host", "10.0.0.2:81")}, "10.0.0.1:80", 0},
		{"header", useHeader,
			&LBContext{DownstreamConn: restored("10.0.0.1:80"), Headers: hdr("x-envoy-original-dst-host", "10.0.0.2:81")}, "10.0.0.2:81", 0},
		{"header without connection", useHeader, &LBContext{Headers: hdr("x-envoy-original-dst-host", "[2001:db8::1]:443")}, "[2001:db8::1]:443", 0},
		{"invalid header falls back", useHeader,
			&LBContext{DownstreamConn: restored("10.0.0.1:80"), Headers: hdr("x-envoy-original-dst-host", "example.com:80")}, "10.0.0.1:80", 1},
		{"custom header name", `{"name":"od","type":"ORIGINAL_DST","lbPolicy":"CLUSTER_PROVIDED","originalDstLbConfig":{"useHttpHeader":true,"httpHeaderName":"X-Dst"}}`,
			&LBContext{Headers: hdr("x-dst", "10.0.0.3:8080")}, "10.0.0.3:8080", 0},
		{"typed cluster_type", `{"name":"od","clusterType":{"name":"envoy.cluster.original_dst"},"lbPolicy":"CLUSTER_PROVIDED"}`,
			&LBContext{DownstreamConn: restored("10.0.0.9:80")}, "10.0.0.9:80", 0},
		{"filter state first", useHeader, &LBContext{DownstreamConn: func() *streaminfo.Conn {
			c := restored("10.0.0.1:80")
			c.FilterState.Set(OriginalDstFilterStateKey, streaminfo.StringObject("10.0.0.7:7000"))
			return c
		}(), Headers: hdr("x-envoy-original-dst-host", "10.0.0.2:81")}, "10.0.0.7:7000", 0},
		{"typed cluster_type config", `{"name":"od","clusterType":{"name":"envoy.cluster.original_dst","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.clusters.original_dst.v3.OriginalDstCluster","useHttpHeader":true,"upstreamPortOverride":81}},"lbPolicy":"CLUSTER_PROVIDED"}`,
			&LBContext{Headers: hdr("x-envoy-original-dst-host", "10.0.0.2:80")}, "10.0.0.2:81", 0},
		{"port override", `{"name":"od","type":"ORIGINAL_DST","lbPolicy":"CLUSTER_PROVIDED","originalDstLbConfig":{"upstreamPortOverride":8443}}`,
			&LBContext{DownstreamConn: restored("10.0.0.1:80")}, "10.0.0.1:8443", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, st := newTestManager(t)
			c := mustAdd(t, m, tt.js)
			h := c.ChooseHost(tt.ctx)
			got := ""
			if h != nil {
				got = h.String()
			}
			if got != tt.want {
				t.Fatalf("ChooseHost = %q, want %q", got, tt.want)
			}
			if n := st.Scope("cluster.od").Counter("original_dst_host_invalid").Value(); n != tt.wantInvalid {
				t.Errorf("original_dst_host_invalid = %d, want %d", n, tt.wantInvalid)
			}
			if h == nil {
				if len(c.Hosts()) != 0 {
					t.Errorf("hosts = %v, want none", hostStrings(c.Hosts()))
				}
				return
			}
			if h.Cluster() != c {
				t.Error("host not of the cluster")
			}
			if h2 := c.ChooseHost(tt.ctx); h2 != h {
				t.Error("second choice made a new host; want the cached one")
			}
			if hs := hostStrings(c.Hosts()); len(hs) != 1 || hs[0] != tt.want {
				t.Errorf("cluster hosts = %v, want [%s]", hs, tt.want)
			}
			if g := st.Scope("cluster.od").Gauge("membership_total").Value(); g != 1 {
				t.Errorf("membership_total = %d, want 1", g)
			}
		})
	}
}

// TestOriginalDstCleanup: a cleanup round removes the hosts unused since the
// previous round and keeps the others (and those with open connections).
func TestOriginalDstCleanup(t *testing.T) {
	m, _ := newTestManager(t)
	c := mustAdd(t, m, `{"name":"od","type":"ORIGINAL_DST","lbPolicy":"CLUSTER_PROVIDED","cleanupInterval":"3600s"}`)
	ctx := func(ap string) *LBContext {
		return &LBContext{DownstreamConn: &streaminfo.Conn{LocalAddr: netip.MustParseAddrPort(ap), LocalAddrRestored: true}}
	}
	a := c.ChooseHost(ctx("10.0.0.1:80"))
	b := c.ChooseHost(ctx("10.0.0.2:80"))
	busy := c.ChooseHost(ctx("10.0.0.3:80"))
	if a == nil || b == nil || busy == nil {
		t.Fatal("no host")
	}
	steps := []struct {
		use  []string // chosen before the round
		busy bool     // 10.0.0.3 has an open connection during the round
		want []string // hosts after the round
	}{
		{nil, false, []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}}, // all chosen since creation
		{[]string{"10.0.0.1:80"}, true, []string{"10.0.0.1:80", "10.0.0.3:80"}},
		{nil, false, nil},
	}
	for i, s := range steps {
		for _, u := range s.use {
			c.ChooseHost(ctx(u))
		}
		if s.busy {
			busy.Stats().CxActive.Add(1)
		}
		c.x.origDst.sweep()
		if s.busy {
			busy.Stats().CxActive.Add(-1)
		}
		got := hostStrings(c.Hosts())
		if strings.Join(got, ",") != strings.Join(s.want, ",") {
			t.Fatalf("round %d: hosts = %v, want %v", i, got, s.want)
		}
	}
	if !b.flags.load(fDrained) {
		t.Error("removed host not drained")
	}
	if again := c.ChooseHost(ctx("10.0.0.2:80")); again == nil || again == b {
		t.Errorf("host after removal = %p, want a new one (old %p)", again, b)
	}
}

// TestOriginalDstCleanupTimer: the cleanup_interval timer runs the rounds.
func TestOriginalDstCleanupTimer(t *testing.T) {
	m, _ := newTestManager(t)
	c := mustAdd(t, m, `{"name":"od","type":"ORIGINAL_DST","lbPolicy":"CLUSTER_PROVIDED","cleanupInterval":"0.05s"}`)
	select {
	case <-c.Initialized():
	case <-time.After(5 * time.Second):
		t.Fatal("ORIGINAL_DST cluster not initialized")
	}
	c.ChooseHost(&LBContext{DownstreamConn: &streaminfo.Conn{LocalAddr: netip.MustParseAddrPort("10.0.0.1:80"), LocalAddrRestored: true}})
	if len(c.Hosts()) != 1 {
		t.Fatalf("hosts = %v", hostStrings(c.Hosts()))
	}
	waitFor(t, "the unused host to be cleaned up", func() bool { return len(c.Hosts()) == 0 })
}

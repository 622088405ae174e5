package server_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/cncf/xds/go/udpa/type/v1" // TypedStruct, which Istio wraps its own filters in

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files")

// TestIstioBookinfoSidecar is the Istio compatibility measure: the xDS
// resources istiod generates for the bookinfo productpage sidecar
// (../shared/istio-bookinfo) are served by go-control-plane over delta ADS,
// as the Istio agent serves them, with the SDS secrets "default" and
// "ROOTCA" made by the test. What outrider refuses is recorded, one line per
// NACKed resource, in testdata/istio_bookinfo.golden (go test -run
// TestIstioBookinfoSidecar -update rewrites it): a change in what is
// accepted shows up as a diff there.
func TestIstioBookinfoSidecar(t *testing.T) {
	dir := "../../../shared/istio-bookinfo/resources"
	if d := os.Getenv("OUTRIDER_ISTIO_BOOKINFO"); d != "" { // a worktree elsewhere
		dir = filepath.Join(d, "resources")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) == 0 {
		t.Skip("istio-bookinfo resources not present")
	}
	res := map[resourcev3.Type][]types.Resource{}
	for _, f := range files {
		kind, _, _ := strings.Cut(filepath.Base(f), "__")
		var m proto.Message
		var typ resourcev3.Type
		switch kind {
		case "Cluster":
			m, typ = &clusterv3.Cluster{}, resourcev3.ClusterType
		case "ClusterLoadAssignment":
			m, typ = &endpointv3.ClusterLoadAssignment{}, resourcev3.EndpointType
		case "Listener":
			m, typ = &listenerv3.Listener{}, resourcev3.ListenerType
		case "RouteConfiguration":
			m, typ = &routev3.RouteConfiguration{}, resourcev3.RouteType
		default:
			t.Fatalf("%s: unknown resource kind %q", f, kind)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if data, err = wrapUnknownTypes(data); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := protojson.Unmarshal(data, m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if l, ok := m.(*listenerv3.Listener); ok {
			// The sidecar's listeners bind 0.0.0.0:15001 and 15006; a test
			// binds only ports the kernel picks.
			if sa := l.GetAddress().GetSocketAddress(); sa != nil && l.GetBindToPort() == nil {
				sa.Address, sa.PortSpecifier = "127.0.0.1", &corev3.SocketAddress_PortValue{PortValue: 0}
			}
		}
		res[typ] = append(res[typ], m)
	}
	ca := servertest.NewCA(t, "istio-ca")
	leaf := ca.Issue(t, nil, "spiffe://cluster.local/ns/default/sa/bookinfo-productpage")
	res[resourcev3.SecretType] = []types.Resource{
		&tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: leaf.CertPEM}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: leaf.KeyPEM}},
		}}},
		&tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca.PEM}},
		}}},
	}
	cp := startControlPlane(t)
	snap, err := cachev3.NewSnapshot("1", res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), xdsNode, snap); err != nil {
		t.Fatal(err)
	}
	p := servertest.Start(t, istioBootstrap(cp.port))

	// Every resource is either applied or NACKed: wait until the listener
	// and cluster counts settle, then read the NACKs.
	var last string
	for deadline, stable := time.Now().Add(20*time.Second), 0; stable < 10 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		cur := fmt.Sprint(p.Stat("listener_manager.total_listeners_active"), p.Stat("cluster_manager.active_clusters"), len(cp.nacked()))
		if cur == last {
			stable++
		} else {
			stable, last = 0, cur
		}
	}
	lines := map[string]bool{}
	for _, n := range cp.nacked() {
		for _, l := range strings.Split(n, "; ") {
			lines[normalizeNACK(l)] = true
		}
	}
	var got []string
	for l := range lines {
		got = append(got, l)
	}
	sort.Strings(got)
	summary := fmt.Sprintf("# listeners active: %d of %d, clusters active: %d of %d (plus the bootstrap's 2)\n",
		p.Stat("listener_manager.total_listeners_active"), len(res[resourcev3.ListenerType]),
		p.Stat("cluster_manager.active_clusters")-2, len(res[resourcev3.ClusterType]))
	out := summary + strings.Join(got, "\n") + "\n"
	golden := filepath.Join("testdata", "istio_bookinfo.golden")
	if *updateGolden {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := os.ReadFile(golden)
	if string(want) != out {
		t.Errorf("Istio bookinfo compatibility changed (go test -run TestIstioBookinfoSidecar -update ./proxy/server/ to accept):\n--- want\n%s--- got\n%s", want, out)
	}
}

// wrapUnknownTypes rewrites every JSON Any whose type is not linked in (Istio's
// own filter configs, which only Istio's Envoy build knows) into a
// udpa.type.v1.TypedStruct naming that type, so that the resource decodes and
// outrider sees, and refuses by name, the extension it does not have.
func wrapUnknownTypes(data []byte) ([]byte, error) {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e)
			}
			if tu, ok := x["@type"].(string); ok {
				if _, err := protoregistry.GlobalTypes.FindMessageByURL(tu); err != nil {
					delete(x, "@type")
					return map[string]any{"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "typeUrl": tu, "value": x}
				}
			}
			return x
		case []any:
			for i, e := range x {
				x[i] = walk(e)
			}
			return x
		default:
			return v
		}
	}
	return json.Marshal(walk(v))
}

var nackNoise = regexp.MustCompile(`127\.0\.0\.1:\d+`)

// normalizeNACK drops what differs between runs (ports).
func normalizeNACK(s string) string {
	return nackNoise.ReplaceAllString(strings.TrimSpace(s), "127.0.0.1:PORT")
}

// istioBootstrap is the shape of Istio's sidecar bootstrap: delta ADS to the
// agent, and the sds-grpc cluster the secrets come through (both the test's
// control plane here, where a pod has the agent's unix sockets).
func istioBootstrap(cpPort int) string {
	cluster := func(name string) string {
		return fmt.Sprintf(`
  - name: %s
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: %s
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]`, name, name, cpPort)
	}
	return fmt.Sprintf(`
node:
  id: %s
  cluster: productpage.default
  metadata: {ISTIO_VERSION: "1.28.0", NAMESPACE: default}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]
  cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 0s}
  lds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 0s}
static_resources:
  clusters:%s%s
`, xdsNode, cluster("xds-grpc"), cluster("sds-grpc"))
}

package accesslog

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// parseLogs reads a YAML list of AccessLog configs; "$DIR" is replaced by dir.
func parseLogs(t testing.TB, dir, y string) []*accesslogv3.AccessLog {
	t.Helper()
	y = strings.ReplaceAll(y, "$DIR", dir)
	js, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(js, &raws); err != nil {
		t.Fatal(err)
	}
	var out []*accesslogv3.AccessLog
	for _, r := range raws {
		al := &accesslogv3.AccessLog{}
		if err := protojson.Unmarshal(r, al); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		out = append(out, al)
	}
	return out
}

// parseFilter reads one AccessLogFilter from YAML.
func parseFilter(t testing.TB, y string) *accesslogv3.AccessLogFilter {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	f := &accesslogv3.AccessLogFilter{}
	if err := protojson.Unmarshal(js, f); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return f
}

// testContext is a populated request/response as the connection manager
// would log it.
func testContext() *formatter.Context {
	req := &headers.Map{}
	req.Add(":method", "POST")
	req.Add(":path", "/api/v1/locations?x=\"q\"")
	req.Add(":authority", "locations")
	req.Add("x-forwarded-for", "10.0.35.28")
	req.Add("user-agent", "nsq2http")
	req.Add("x-request-id", "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2")
	req.Add("x-multi", "a")
	req.Add("x-multi", "b")
	resp := &headers.Map{}
	resp.Add(":status", "204")
	resp.Add("x-envoy-upstream-service-time", "100")
	tr := &headers.Map{}
	tr.Add("grpc-status", "14")
	conn := &streaminfo.Conn{
		ID:               7,
		LocalAddr:        netip.MustParseAddrPort("127.0.0.1:10000"),
		RemoteAddr:       netip.MustParseAddrPort("10.0.35.28:51234"),
		DirectRemoteAddr: netip.MustParseAddrPort("10.0.35.28:51234"),
	}
	s := &streaminfo.Stream{
		Conn:                 conn,
		StartTime:            time.Date(2016, 4, 15, 20, 17, 0, 310_000_000, time.UTC),
		LastDownstreamRxByte: 2 * time.Millisecond,
		FirstUpstreamRxByte:  120 * time.Millisecond,
		LastDownstreamTxByte: 226 * time.Millisecond,
		Protocol:             "HTTP/1.1",
		ResponseCode:         204,
		ResponseCodeDetails:  "via_upstream",
		BytesReceived:        154,
		BytesSent:            0,
		RouteName:            "r1",
		UpstreamCluster:      "locations",
		UpstreamHost:         netip.MustParseAddrPort("10.0.2.1:80"),
		RequestID:            "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2",
	}
	return &formatter.Context{Stream: s, Request: req, Response: resp, Trailers: tr,
		LogType: accesslogdatav3.AccessLogType_DownstreamEnd}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkGolden compares got with testdata/name, rewriting it when
// OUTRIDER_UPDATE_GOLDEN is set.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("OUTRIDER_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := readFile(t, path); got != want {
		t.Errorf("%s mismatch\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func mustStruct(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

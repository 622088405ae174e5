package tracing

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

func req(kv ...string) *headers.Map {
	h := &headers.Map{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// id0 has 0000 as its integer part (first 8 hex digits): always below any
// non-zero sampling numerator; id9999 has 0x270f = 9999, above all but 100%.
const (
	id0    = "00000000-0000-4000-8000-000000000000"
	id9999 = "0000270f-0000-4000-8000-000000000000"
)

func TestMutateTraceStatus(t *testing.T) {
	half := Fraction{5000, 10000}
	none := Fraction{0, 10000}
	tests := []struct {
		name     string
		h        *headers.Map
		s        Sampling
		want     TraceStatus
		reason   Reason
		wantText string // the x-request-id afterwards, when checked
	}{
		{"random sampled", req("x-request-id", id0), FullSampling, Sampled, RandomSampling, "00000000-0000-9000-8000-000000000000"},
		{"random below half", req("x-request-id", id0), Sampling{FullSampling.Client, half, FullSampling.Overall}, Sampled, RandomSampling, ""},
		{"random above half", req("x-request-id", id9999), Sampling{FullSampling.Client, half, FullSampling.Overall}, NoTrace, NotTraceable, id9999},
		{"forced", req("x-request-id", id9999, "x-envoy-force-trace", "true"), Sampling{FullSampling.Client, none, FullSampling.Overall}, Forced, ServiceForced, "0000270f-0000-a000-8000-000000000000"},
		{"client trace id", req("x-request-id", id9999, "x-client-trace-id", "abc"), Sampling{FullSampling.Client, none, FullSampling.Overall}, Client, ClientForced, "0000270f-0000-b000-8000-000000000000"},
		{"client sampling off falls to force", req("x-request-id", id9999, "x-client-trace-id", "abc", "x-envoy-force-trace", "1"), Sampling{none, none, FullSampling.Overall}, Forced, ServiceForced, ""},
		{"already traced kept", req("x-request-id", "00000000-0000-a000-8000-000000000000"), Sampling{none, none, FullSampling.Overall}, Forced, ServiceForced, ""},
		{"overall off", req("x-request-id", id0, "x-envoy-force-trace", "1"), Sampling{FullSampling.Client, FullSampling.Random, none}, NoTrace, NotTraceable, id0},
		{"overall off clears a traced id", req("x-request-id", "00000000-0000-9000-8000-000000000000"), Sampling{FullSampling.Client, FullSampling.Random, none}, NoTrace, NotTraceable, id0},
		{"not a uuid", req("x-request-id", "abcdef12-not-a-uuid"), FullSampling, NoTrace, NotTraceable, "abcdef12-not-a-uuid"},
		{"no request id", req(), FullSampling, NoTrace, NotTraceable, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := MutateTraceStatus(tc.h, tc.s)
			if got := GetTraceStatus(tc.h); got != tc.want {
				t.Errorf("status %c, want %c", got, tc.want)
			}
			if d.Reason != tc.reason || d.Traced != (tc.want != NoTrace) {
				t.Errorf("decision %+v, want reason %d traced %v", d, tc.reason, tc.want != NoTrace)
			}
			if tc.wantText != "" {
				if got := tc.h.GetString("x-request-id"); got != tc.wantText {
					t.Errorf("x-request-id %q, want %q", got, tc.wantText)
				}
			}
		})
	}
}

func TestFractions(t *testing.T) {
	tests := []struct {
		f     Fraction
		value uint64
		want  bool
	}{
		{FromPercent(nil), 9999, true},
		{FromPercent(&typev3.Percent{Value: 0}), 0, false},
		{FromPercent(&typev3.Percent{Value: 25}), 2499, true},
		{FromPercent(&typev3.Percent{Value: 25}), 2500, false},
		{FromFractional(&typev3.FractionalPercent{Numerator: 1}, Fraction{}), 100, true}, // 100 % 100 = 0 < 1
		{FromFractional(&typev3.FractionalPercent{Numerator: 1}, Fraction{}), 101, false},
		{FromFractional(&typev3.FractionalPercent{Numerator: 10, Denominator: typev3.FractionalPercent_TEN_THOUSAND}, Fraction{}), 9, true},
		{FromFractional(nil, Fraction{3, 10}), 2, true},
	}
	for i, tc := range tests {
		if got := tc.f.enabled(tc.value); got != tc.want {
			t.Errorf("%d: %+v.enabled(%d) = %v, want %v", i, tc.f, tc.value, got, tc.want)
		}
	}
}

func TestBuildURL(t *testing.T) {
	h := req(":scheme", "http", ":authority", "example.com", ":path", "/a/"+strings.Repeat("x", 300))
	if got := BuildURL(h, 0); got != "http://example.com/a/"+strings.Repeat("x", 253) {
		t.Errorf("default max: %q", got)
	}
	if got := BuildURL(h, 4); got != "http://example.com/a/x" {
		t.Errorf("max 4: %q", got)
	}
	h.Set("x-envoy-original-path", "/orig")
	if got := BuildURL(h, 0); got != "http://example.com/orig" {
		t.Errorf("original path: %q", got)
	}
}

// recSpan records tags.
type recSpan struct {
	NoopSpan
	tags     map[string]string
	finished bool
}

func (s *recSpan) SetTag(k, v string)        { s.tags[k] = v }
func (s *recSpan) Finish(time.Time)          { s.finished = true }
func (s *recSpan) Log(_ time.Time, e string) { s.tags["log:"+e] = "1" }

func TestFinalizeDownstreamTags(t *testing.T) {
	t.Setenv("TRACING_TEST_ENV", "from-env")
	custom, err := CompileCustomTags([]*tracingv3.CustomTag{
		{Tag: "lit", Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: "v"}}},
		{Tag: "env", Type: &tracingv3.CustomTag_Environment_{Environment: &tracingv3.CustomTag_Environment{Name: "TRACING_TEST_ENV"}}},
		{Tag: "hdr", Type: &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{Name: "X-Tenant"}}},
		{Tag: "hdr-default", Type: &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{Name: "x-missing", DefaultValue: "dflt"}}},
		{Tag: "hdr-absent", Type: &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{Name: "x-missing"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := req(":method", "POST", ":scheme", "https", ":authority", "h", ":path", "/p", "x-request-id", id0,
		"user-agent", "ua", "x-tenant", "t1", "x-client-trace-id", "ctid")
	conn := &streaminfo.Conn{}
	info := &streaminfo.Stream{Conn: conn, Protocol: "HTTP/1.1", ResponseCode: 503, BytesReceived: 7, BytesSent: 9,
		UpstreamCluster: "backend", Flags: streaminfo.UpstreamOverflow}
	s := &recSpan{tags: map[string]string{}}
	FinalizeDownstream(s, &TagConfig{CustomTags: custom}, h, req(":status", "503"), nil, info, time.Now())
	want := map[string]string{
		"component": "proxy", "guid:x-request-id": id0, "http.url": "https://h/p", "http.method": "POST",
		"downstream_cluster": "-", "user_agent": "ua", "http.protocol": "HTTP/1.1", "guid:x-client-trace-id": "ctid",
		"request_size": "7", "response_size": "9", "http.status_code": "503", "error": "true",
		"upstream_cluster": "backend", "upstream_cluster.name": "backend", "response_flags": "UO",
		"lit": "v", "env": "from-env", "hdr": "t1", "hdr-default": "dflt",
	}
	for k, v := range want {
		if s.tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, s.tags[k], v)
		}
	}
	if _, ok := s.tags["hdr-absent"]; ok {
		t.Error("a request_header tag without header nor default was set")
	}
	if !s.finished {
		t.Error("span not finished")
	}
	ok := &recSpan{tags: map[string]string{}}
	info.ResponseCode = 200
	FinalizeDownstream(ok, &TagConfig{}, h, nil, nil, info, time.Now())
	if _, has := ok.tags["error"]; has {
		t.Error("error tag on a 200")
	}
}

func TestCustomTagErrors(t *testing.T) {
	tests := []struct {
		tag  *tracingv3.CustomTag
		want string
	}{
		{&tracingv3.CustomTag{Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: "v"}}}, "custom_tags[0].tag: required"},
		{&tracingv3.CustomTag{Tag: "m", Type: &tracingv3.CustomTag_Metadata_{Metadata: &tracingv3.CustomTag_Metadata{}}}, "custom_tags[0] (m).metadata: not supported"},
		{&tracingv3.CustomTag{Tag: "e"}, "one of literal, environment or request_header is required"},
	}
	for _, tc := range tests {
		_, err := CompileCustomTags([]*tracingv3.CustomTag{tc.tag})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

func TestGRPCAndVerboseTags(t *testing.T) {
	h := req(":method", "POST", ":scheme", "http", ":authority", "svc", ":path", "/pkg.Svc/Call",
		"content-type", "application/grpc", "grpc-timeout", "1S")
	info := &streaminfo.Stream{Conn: &streaminfo.Conn{}, Protocol: "HTTP/2", ResponseCode: 200,
		StartTime: time.Now(), FirstDownstreamTxByte: time.Millisecond, LastDownstreamRxByte: time.Microsecond}
	s := &recSpan{tags: map[string]string{}}
	FinalizeDownstream(s, &TagConfig{Verbose: true}, h, req(":status", "200", "content-type", "application/grpc"),
		req("grpc-status", "14", "grpc-message", "unavailable"), info, time.Now())
	want := map[string]string{
		"grpc.path": "/pkg.Svc/Call", "grpc.authority": "svc", "grpc.content_type": "application/grpc", "grpc.timeout": "1S",
		"grpc.status_code": "14", "grpc.message": "unavailable", "error": "true",
		"log:" + LogFirstDownstreamTxByteSent: "1", "log:" + LogLastDownstreamRxByteReceived: "1",
	}
	for k, v := range want {
		if s.tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, s.tags[k], v)
		}
	}
	if _, ok := s.tags["log:"+LogFirstUpstreamTxByteSent]; ok {
		t.Error("logged an event that did not happen")
	}
	okSpan := &recSpan{tags: map[string]string{}}
	FinalizeDownstream(okSpan, &TagConfig{}, h, nil, req("grpc-status", "0"), info, time.Now())
	if _, bad := okSpan.tags["error"]; bad || okSpan.tags["grpc.status_code"] != "0" {
		t.Errorf("grpc OK tags %v", okSpan.tags)
	}
	if _, logged := okSpan.tags["log:"+LogFirstDownstreamTxByteSent]; logged {
		t.Error("logged without verbose")
	}
}

func TestFinalizeUpstreamTags(t *testing.T) {
	info := &streaminfo.Stream{Protocol: "HTTP/1.1", ResponseCode: 200, UpstreamCluster: "c", UpstreamHost: netip.MustParseAddrPort("10.0.0.1:443"), BytesSent: 3}
	s := &recSpan{tags: map[string]string{}}
	FinalizeUpstream(s, &TagConfig{}, req(), info, time.Now())
	for k, v := range map[string]string{"upstream_address": "10.0.0.1:443", "peer.address": "10.0.0.1:443",
		"http.protocol": "HTTP/1.1", "upstream_cluster": "c", "component": "proxy", "http.status_code": "200"} {
		if s.tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, s.tags[k], v)
		}
	}
	if _, ok := s.tags["response_size"]; ok {
		t.Error("upstream span has response_size (Envoy sets it on the downstream span only)")
	}
}

package formatter

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

func testContext() *Context {
	req := &headers.Map{}
	req.Add(":method", "GET")
	req.Add(":path", "/a?b=c")
	req.Add(":authority", "example.com")
	req.Add("x-forwarded-for", "10.0.0.1")
	req.Add("x-long", "abcdefgh")
	resp := &headers.Map{}
	resp.Add(":status", "200")
	resp.Add("x-envoy-upstream-service-time", "7")
	tr := &headers.Map{}
	tr.Add("grpc-status", "0")
	conn := &streaminfo.Conn{
		ID:                  42,
		LocalAddr:           netip.MustParseAddrPort("127.0.0.1:10000"),
		RemoteAddr:          netip.MustParseAddrPort("[2001:db8::1]:5555"),
		DirectRemoteAddr:    netip.MustParseAddrPort("10.1.2.3:6666"),
		RequestedServerName: "sni.example",
	}
	s := &streaminfo.Stream{
		Conn:                 conn,
		StartTime:            time.Date(2024, 3, 5, 7, 8, 9, 123456789, time.UTC),
		LastDownstreamRxByte: 3 * time.Millisecond,
		FirstUpstreamRxByte:  20 * time.Millisecond,
		LastDownstreamTxByte: 25*time.Millisecond + 900*time.Microsecond,
		Protocol:             "HTTP/1.1",
		ResponseCode:         200,
		ResponseCodeDetails:  "via_upstream",
		Flags:                streaminfo.UpstreamRetryLimitExceeded | streaminfo.NoRouteFound,
		BytesReceived:        11,
		BytesSent:            22,
		RouteName:            "r1",
		UpstreamCluster:      "backend",
		UpstreamHost:         netip.MustParseAddrPort("10.9.9.9:80"),
		UpstreamLocalAddr:    "10.8.8.8:4444",
		RequestID:            "rid-1",
	}
	return &Context{Stream: s, Request: req, Response: resp, Trailers: tr, LocalReplyBody: "no healthy upstream"}
}

func TestFormatCommands(t *testing.T) {
	ctx := testContext()
	tests := []struct {
		format string
		want   string
	}{
		{"plain", "plain"},
		{"100%% sure", "100% sure"},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", "[2001:db8::1]:5555"},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "2001:db8::1"},
		{"%DOWNSTREAM_REMOTE_PORT%", "5555"},
		{"%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "10.1.2.3:6666"},
		{"%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%", "10.1.2.3"},
		{"%DOWNSTREAM_LOCAL_ADDRESS%", "127.0.0.1:10000"},
		{"%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "127.0.0.1"},
		{"%DOWNSTREAM_LOCAL_PORT%", "10000"},
		{"%REQ(:METHOD)% %REQ(:PATH)%", "GET /a?b=c"},
		{"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/a?b=c"},
		{"%REQ(X-LONG):3%", "abc"},
		{"%REQ(X-MISSING)%", "-"},
		{"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "7"},
		{"%RESP(:STATUS)%", "200"},
		{"%TRAILER(GRPC-STATUS)%", "0"},
		{"%PROTOCOL%", "HTTP/1.1"},
		{"%START_TIME%", "2024-03-05T07:08:09.123Z"},
		{"%START_TIME(%Y/%m/%d %H:%M:%S.%3f)%", "2024/03/05 07:08:09.123"},
		{"%START_TIME(%s.%6f)%", "1709622489.123456"},
		{"%START_TIME(%f)%", "123456789"},
		{"%START_TIME(%E6S|%T|%F|%b %a %j)%", "09.123456|07:08:09|2024-03-05|Mar Tue 065"},
		{"%RESPONSE_CODE%", "200"},
		{"%RESPONSE_CODE_DETAILS%", "via_upstream"},
		{"%RESPONSE_FLAGS%", "NR,URX"},
		{"%BYTES_RECEIVED% %BYTES_SENT%", "11 22"},
		{"%DURATION%", "25"},
		{"%REQUEST_DURATION%", "3"},
		{"%RESPONSE_DURATION%", "20"},
		{"%UPSTREAM_HOST%", "10.9.9.9:80"},
		{"%UPSTREAM_CLUSTER%", "backend"},
		{"%UPSTREAM_CLUSTER_RAW%", "backend"},
		{"%UPSTREAM_LOCAL_ADDRESS%", "10.8.8.8:4444"},
		{"%UPSTREAM_TRANSPORT_FAILURE_REASON%", "-"},
		{"%CONNECTION_TERMINATION_DETAILS%", "-"},
		{"%ROUTE_NAME%", "r1"},
		{"%REQUESTED_SERVER_NAME%", "sni.example"},
		{"%CONNECTION_ID%", "42"},
		{"%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "1"},
		{"%STREAM_ID%", "rid-1"},
		{"<%LOCAL_REPLY_BODY%>", "<no healthy upstream>"},
		{"a%PROTOCOL%b%RESPONSE_CODE%c", "aHTTP/1.1b200c"},
	}
	for _, tt := range tests {
		f, err := Compile(tt.format)
		if err != nil {
			t.Errorf("Compile(%q): %v", tt.format, err)
			continue
		}
		if got := f.Format(ctx); got != tt.want {
			t.Errorf("Compile(%q) = %q, want %q", tt.format, got, tt.want)
		}
	}
}

func TestMissingValues(t *testing.T) {
	tests := []struct {
		format      string
		ctx         *Context
		log, header string
	}{
		{"%REQ(X-NONE)%", &Context{Request: &headers.Map{}}, "-", ""},
		{"x=%REQ(X-NONE)%;", nil, "x=-;", "x=;"},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", nil, "-", ""},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", &Context{Stream: &streaminfo.Stream{}}, "-", ""},
		{"%PROTOCOL%", &Context{Stream: &streaminfo.Stream{}}, "-", ""},
		{"%DURATION%", &Context{Stream: &streaminfo.Stream{}}, "-", ""},
		{"%RESPONSE_CODE%", &Context{Stream: &streaminfo.Stream{}}, "0", "0"},
		{"%RESPONSE_FLAGS%", &Context{Stream: &streaminfo.Stream{}}, "-", "-"},
		{"%UPSTREAM_REQUEST_ATTEMPT_COUNT%", &Context{Stream: &streaminfo.Stream{}}, "0", "0"},
		// An empty local reply body is a value, never "-" (Envoy's LocalReplyBodyFormatter).
		{"[%LOCAL_REPLY_BODY%]", nil, "[]", "[]"},
	}
	for _, tt := range tests {
		lf, err := Compile(tt.format)
		if err != nil {
			t.Fatal(err)
		}
		hf, err := CompileHeader(tt.format)
		if err != nil {
			t.Fatal(err)
		}
		if got := lf.Format(tt.ctx); got != tt.log {
			t.Errorf("log %q = %q, want %q", tt.format, got, tt.log)
		}
		if got := hf.Format(tt.ctx); got != tt.header {
			t.Errorf("header %q = %q, want %q", tt.format, got, tt.header)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		format, want string
	}{
		{"%NOPE%", "not supported field in StreamInfo: NOPE"},
		{"abc %", "Couldn't find valid command at position 4"},
		{"%REQ(a%", "Couldn't find valid command at position 0"},
		{"%lower%", "Couldn't find valid command"},
		{"%REQ()%", "REQ requires parameters"},
		{"%REQ(a?b?c)%", "more than 1 alternative header"},
		{"%PROTOCOL:3%", "PROTOCOL does not take any parameters or length"},
		{"%START_TIME(%Q)%", "unsupported time specifier %Q"},
	}
	for _, tt := range tests {
		_, err := Compile(tt.format)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Compile(%q) error = %v, want containing %q", tt.format, err, tt.want)
		}
	}
}

func TestStatic(t *testing.T) {
	f, _ := Compile("a%%b")
	if !f.IsStatic() || f.StaticValue() != "a%b" {
		t.Errorf("static = %v %q", f.IsStatic(), f.StaticValue())
	}
	g, _ := Compile("a%PROTOCOL%")
	if g.IsStatic() {
		t.Error("dynamic format reported static")
	}
}

func TestDefaultAccessLogFormat(t *testing.T) {
	f, err := Compile(DefaultAccessLogFormat)
	if err != nil {
		t.Fatal(err)
	}
	want := `[2024-03-05T07:08:09.123Z] "GET /a?b=c HTTP/1.1" 200 NR,URX 11 22 25 7 "10.0.0.1" "-" "-" "example.com" "10.9.9.9:80"` + "\n"
	if got := f.Format(testContext()); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestAppendNoAlloc(t *testing.T) {
	ctx := testContext()
	ctx.Stream.Flags = 0
	f, err := Compile(DefaultAccessLogFormat)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 1024)
	n := testing.AllocsPerRun(100, func() { buf = f.Append(buf[:0], ctx) })
	if n != 0 {
		t.Errorf("Append allocs = %v, want 0", n)
	}
}

func BenchmarkAppendDefault(b *testing.B) {
	ctx := testContext()
	f := MustCompile(DefaultAccessLogFormat)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Append(buf[:0], ctx)
	}
}

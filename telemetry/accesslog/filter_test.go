package accesslog

import (
	"testing"
	"time"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

func TestFilters(t *testing.T) {
	// mod changes testContext (code 204, 226ms, x-request-id cc21d9b0...,
	// grpc-status trailer 14, DownstreamEnd) for one case.
	type mod func(c *formatter.Context)
	code := func(n int) mod { return func(c *formatter.Context) { c.Stream.ResponseCode = n } }
	flags := func(f streaminfo.ResponseFlag) mod { return func(c *formatter.Context) { c.Stream.Flags = f } }
	noTrailers := func(c *formatter.Context) { c.Trailers = nil }
	tests := []struct {
		name   string
		filter string
		mod    mod
		want   bool
	}{
		{"status eq", `status_code_filter: {comparison: {op: EQ, value: {default_value: 204, runtime_key: k}}}`, nil, true},
		{"status eq miss", `status_code_filter: {comparison: {op: EQ, value: {default_value: 200, runtime_key: k}}}`, nil, false},
		{"status ge", `status_code_filter: {comparison: {op: GE, value: {default_value: 400, runtime_key: k}}}`, code(503), true},
		{"status ge miss", `status_code_filter: {comparison: {op: GE, value: {default_value: 400, runtime_key: k}}}`, nil, false},
		{"status le", `status_code_filter: {comparison: {op: LE, value: {default_value: 299, runtime_key: k}}}`, nil, true},
		{"status ne", `status_code_filter: {comparison: {op: NE, value: {default_value: 204, runtime_key: k}}}`, nil, false},
		{"status none is 0", `status_code_filter: {comparison: {op: EQ, value: {default_value: 0, runtime_key: k}}}`, code(0), true},
		{"duration ge", `duration_filter: {comparison: {op: GE, value: {default_value: 226, runtime_key: k}}}`, nil, true},
		{"duration ge miss", `duration_filter: {comparison: {op: GE, value: {default_value: 227, runtime_key: k}}}`, nil, false},
		{"duration in progress", `duration_filter: {comparison: {op: GE, value: {default_value: 1000, runtime_key: k}}}`,
			func(c *formatter.Context) {
				c.Stream.LastDownstreamTxByte = 0
				c.Stream.StartTime = time.Now().Add(-2 * time.Second)
			}, true},
		{"duration no start", `duration_filter: {comparison: {op: LE, value: {default_value: 1000, runtime_key: k}}}`,
			func(c *formatter.Context) { c.Stream = &streaminfo.Stream{} }, false},
		{"not health check", `not_health_check_filter: {}`, nil, true},
		{"traceable", `traceable_filter: {}`, nil, false},
		{"runtime 100%", `runtime_filter: {runtime_key: k, percent_sampled: {numerator: 100}}`, nil, true},
		{"runtime 0%", `runtime_filter: {runtime_key: k, percent_sampled: {numerator: 0}}`, nil, false},
		{"runtime default 0%", `runtime_filter: {runtime_key: k}`, nil, false},
		// 0xcc21d9b0 % 100 = 80; % 10000 = 480
		{"runtime by request id in", `runtime_filter: {runtime_key: k, percent_sampled: {numerator: 81}}`, nil, true},
		{"runtime by request id out", `runtime_filter: {runtime_key: k, percent_sampled: {numerator: 80}}`, nil, false},
		{"runtime ten thousand", `runtime_filter: {runtime_key: k, percent_sampled: {numerator: 481, denominator: TEN_THOUSAND}}`, nil, true},
		{"runtime ten thousand out", `runtime_filter: {runtime_key: k, percent_sampled: {numerator: 480, denominator: TEN_THOUSAND}}`, nil, false},
		{"and", `and_filter: {filters: [{not_health_check_filter: {}}, {status_code_filter: {comparison: {op: EQ, value: {default_value: 204, runtime_key: k}}}}]}`, nil, true},
		{"and false", `and_filter: {filters: [{not_health_check_filter: {}}, {traceable_filter: {}}]}`, nil, false},
		{"or", `or_filter: {filters: [{traceable_filter: {}}, {not_health_check_filter: {}}]}`, nil, true},
		{"or false", `or_filter: {filters: [{traceable_filter: {}}, {response_flag_filter: {}}]}`, nil, false},
		{"header present", `header_filter: {header: {name: User-Agent}}`, nil, true},
		{"header absent", `header_filter: {header: {name: x-nope, present_match: false}}`, nil, true},
		{"header exact", `header_filter: {header: {name: ":method", string_match: {exact: post, ignore_case: true}}}`, nil, true},
		{"header exact case", `header_filter: {header: {name: ":method", string_match: {exact: post}}}`, nil, false},
		{"header prefix", `header_filter: {header: {name: ":path", string_match: {prefix: /api/}}}`, nil, true},
		{"header regex", `header_filter: {header: {name: user-agent, safe_regex_match: {regex: "nsq.*"}}}`, nil, true},
		{"header regex is full", `header_filter: {header: {name: user-agent, safe_regex_match: {regex: "nsq"}}}`, nil, false},
		{"header multi joined", `header_filter: {header: {name: x-multi, exact_match: "a,b"}}`, nil, true},
		{"header inverted", `header_filter: {header: {name: user-agent, exact_match: curl, invert_match: true}}`, nil, true},
		{"header missing fails inverted", `header_filter: {header: {name: x-nope, exact_match: curl, invert_match: true}}`, nil, false},
		{"header missing as empty", `header_filter: {header: {name: x-nope, exact_match: "", treat_missing_header_as_empty: true}}`, nil, true},
		{"header range", `header_filter: {header: {name: x-n, range_match: {start: 1, end: 10}}}`,
			func(c *formatter.Context) { c.Request.Add("x-n", "9") }, true},
		{"header range end excluded", `header_filter: {header: {name: x-n, range_match: {start: 1, end: 10}}}`,
			func(c *formatter.Context) { c.Request.Add("x-n", "10") }, false},
		{"flags any", `response_flag_filter: {}`, flags(streaminfo.UpstreamRetryLimitExceeded), true},
		{"flags any none", `response_flag_filter: {}`, nil, false},
		{"flags listed", `response_flag_filter: {flags: [UH, UF]}`, flags(streaminfo.UpstreamConnectionFailure | streaminfo.NoRouteFound), true},
		{"flags not listed", `response_flag_filter: {flags: [UH, UF]}`, flags(streaminfo.NoRouteFound), false},
		{"flags never set", `response_flag_filter: {flags: [UDO]}`, flags(^streaminfo.ResponseFlag(0)), false},
		{"grpc trailer", `grpc_status_filter: {statuses: [UNAVAILABLE]}`, nil, true},
		{"grpc trailer excluded", `grpc_status_filter: {statuses: [UNAVAILABLE], exclude: true}`, nil, false},
		{"grpc header", `grpc_status_filter: {statuses: [OK]}`,
			func(c *formatter.Context) { c.Trailers = nil; c.Response.Add("grpc-status", "0") }, true},
		{"grpc from http 503", `grpc_status_filter: {statuses: [UNAVAILABLE]}`, func(c *formatter.Context) { noTrailers(c); c.Stream.ResponseCode = 503 }, true},
		{"grpc from http 404", `grpc_status_filter: {statuses: [UNIMPLEMENTED]}`, func(c *formatter.Context) { noTrailers(c); c.Stream.ResponseCode = 404 }, true},
		{"grpc from http 200 unknown", `grpc_status_filter: {statuses: [UNKNOWN]}`, func(c *formatter.Context) { noTrailers(c); c.Stream.ResponseCode = 200 }, true},
		{"grpc nothing unknown", `grpc_status_filter: {statuses: [UNKNOWN]}`, func(c *formatter.Context) { noTrailers(c); c.Stream.ResponseCode = 0 }, true},
		{"grpc invalid matches none", `grpc_status_filter: {statuses: [UNKNOWN, OK]}`,
			func(c *formatter.Context) { c.Trailers.Set("grpc-status", "99") }, false},
		{"grpc invalid excluded passes", `grpc_status_filter: {statuses: [UNKNOWN], exclude: true}`,
			func(c *formatter.Context) { c.Trailers.Set("grpc-status", "x") }, true},
		{"log type", `log_type_filter: {types: [DownstreamEnd, UpstreamEnd]}`, nil, true},
		{"log type miss", `log_type_filter: {types: [TcpConnectionEnd]}`, nil, false},
		{"log type exclude", `log_type_filter: {types: [DownstreamEnd], exclude: true}`, nil, false},
		{"log type upstream", `log_type_filter: {types: [UpstreamEnd]}`,
			func(c *formatter.Context) { c.LogType = accesslogdatav3.AccessLogType_UpstreamEnd }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := compileFilter(parseFilter(t, tt.filter))
			if err != nil {
				t.Fatal(err)
			}
			ctx := testContext()
			if tt.mod != nil {
				tt.mod(ctx)
			}
			if got := f.evaluate(ctx); got != tt.want {
				t.Errorf("evaluate = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRuntimeFilterIndependentRandomness(t *testing.T) {
	f, err := compileFilter(parseFilter(t, `runtime_filter: {runtime_key: k, percent_sampled: {numerator: 50}, use_independent_randomness: true}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext() // the request id alone would always sample it in
	in := 0
	for i := 0; i < 2000; i++ {
		if f.evaluate(ctx) {
			in++
		}
	}
	if in < 700 || in > 1300 {
		t.Errorf("sampled %d of 2000 at 50%%", in)
	}
}

func TestFilterOnEmptyContext(t *testing.T) {
	// A Context with nothing must not panic and must give Envoy's answers.
	ctx := &formatter.Context{}
	for _, tc := range []struct {
		filter string
		want   bool
	}{
		{`status_code_filter: {comparison: {op: EQ, value: {default_value: 0, runtime_key: k}}}`, true},
		{`duration_filter: {comparison: {op: GE, value: {default_value: 0, runtime_key: k}}}`, false},
		{`header_filter: {header: {name: x, present_match: false}}`, true},
		{`response_flag_filter: {}`, false},
		{`grpc_status_filter: {statuses: [UNKNOWN]}`, true},
		{`log_type_filter: {types: [NotSet]}`, true},
	} {
		f, err := compileFilter(parseFilter(t, tc.filter))
		if err != nil {
			t.Fatal(err)
		}
		if got := f.evaluate(ctx); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.filter, got, tc.want)
		}
	}
}

package server_test

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// localReplyRoutes: /nh goes to a cluster without hosts (503 no healthy
// upstream, UH), /nc to a cluster named by a header nobody sends (503
// cluster not found, NC), /ok upstream; anything else has no route (404).
const localReplyRoutes = `- match: {prefix: "/nh"}
  route: {cluster: empty}
- match: {prefix: "/nc"}
  route: {cluster_header: x-nowhere}
- match: {prefix: "/ok"}
  route: {cluster: up}`

// localReplyBootstrap is httpBootstrap with localReplyRoutes, the
// connection manager's local_reply_config lrc (YAML below
// "local_reply_config:") and the host-less cluster "empty".
func localReplyBootstrap(upPort int, lrc string) string {
	y := httpBootstrap(upPort, localReplyRoutes, "local_reply_config:\n"+indent(lrc, 2))
	return strings.Replace(y, "  clusters:\n", `  clusters:
  - name: empty
    type: STATIC
    load_assignment: {cluster_name: empty}
`, 1)
}

// lrMappers: UH becomes 502 with a header (rendered before the code is
// rewritten, as Envoy's) and a body; a 503 with x-json gets a JSON body;
// a 404 gets a body. Every local reply is then formatted by body_format.
const lrMappers = `mappers:
- filter: {response_flag_filter: {flags: [UH]}}
  status_code: 502
  headers_to_add:
  - header: {key: x-mapped, value: "uh-%RESPONSE_CODE%"}
  body: {inline_string: "mapped: no upstream"}
- filter:
    and_filter:
      filters:
      - status_code_filter: {comparison: {op: EQ, value: {default_value: 503, runtime_key: lr.k}}}
      - header_filter: {header: {name: x-json, present_match: true}}
  body_format_override:
    json_format: {code: "%RESPONSE_CODE%", body: "%LOCAL_REPLY_BODY%", flags: "%RESPONSE_FLAGS%"}
- filter: {status_code_filter: {comparison: {op: EQ, value: {default_value: 404, runtime_key: lr.k}}}}
  body: {inline_string: "nothing here"}
body_format:
  text_format: "[%RESPONSE_CODE%] %LOCAL_REPLY_BODY% (%REQ(:PATH)%)"`

func TestLocalReplyConfig(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/x-up")
		w.WriteHeader(200)
		io.WriteString(w, "hello")
	})
	p := servertest.Start(t, localReplyBootstrap(up.port(), lrMappers))
	for _, tc := range []struct {
		name, method, path string
		hdr                []string
		status             int
		body, ctype        string
		mapped             string // x-mapped
	}{
		{"no healthy upstream rewritten to 502", "GET", "/nh", nil, 502,
			"[502] mapped: no upstream (/nh)", "text/plain", "uh-503"},
		{"no mapper matches: body_format only", "GET", "/nc", nil, 503, "[503]  (/nc)", "text/plain", ""},
		{"body_format_override json", "GET", "/nc", []string{"x-json", "1"}, 503,
			`{"body":"","code":503,"flags":"NC"}` + "\n", "application/json", ""},
		{"no route", "POST", "/missing", nil, 404, "[404] nothing here (/missing)", "text/plain", ""},
		{"upstream response untouched", "GET", "/ok", []string{"x-json", "1"}, 200, "hello", "text/x-up", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, p.URL("front", tc.path), nil)
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || string(b) != tc.body || resp.Header.Get("Content-Type") != tc.ctype ||
				resp.Header.Get("X-Mapped") != tc.mapped {
				t.Fatalf("got %d %q content-type %q x-mapped %q, want %d %q %q %q", resp.StatusCode, b,
					resp.Header.Get("Content-Type"), resp.Header.Get("X-Mapped"), tc.status, tc.body, tc.ctype, tc.mapped)
			}
			if resp.ContentLength != int64(len(tc.body)) {
				t.Fatalf("content-length %d, body %d bytes", resp.ContentLength, len(tc.body))
			}
		})
	}
	// The rewritten code is the one counted.
	p.WaitStat("http.ingress.downstream_rq_5xx", 3)
}

// gRPC requests get trailers-only local replies: grpc-status from the
// (rewritten) code, the formatted body in grpc-message (a JSON body without
// its newline).
func TestLocalReplyConfigGRPC(t *testing.T) {
	p := servertest.Start(t, localReplyBootstrap(servertest.DeadPort(t), lrMappers))
	c := h2Client(t)
	for _, tc := range []struct {
		name, path string
		json       bool
		status     string
		msg        string
		mapped     string
	}{
		{"mapped", "/nh", false, "14", "[502] mapped: no upstream (/nh)", "uh-503"},
		{"json", "/nc", true, "14", `{"body":"","code":503,"flags":"NC"}`, ""},
		{"no route", "/missing", false, "12", "[404] nothing here (/missing)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", p.URL("front", tc.path), strings.NewReader("\x00\x00\x00\x00\x00"))
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			if tc.json {
				req.Header.Set("X-Json", "1")
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			h := resp.Header
			if resp.StatusCode != 200 || len(b) != 0 || h.Get("Content-Type") != "application/grpc" ||
				h.Get("Grpc-Status") != tc.status || h.Get("X-Mapped") != tc.mapped {
				t.Fatalf("got %d %q headers %v", resp.StatusCode, b, h)
			}
			if got := h.Get("Grpc-Message"); got != grpcPercentEncode(tc.msg) {
				t.Fatalf("grpc-message %q, want %q", got, grpcPercentEncode(tc.msg))
			}
		})
	}
}

// grpcPercentEncode is gRPC's grpc-message encoding (bytes outside
// printable ASCII, and '%').
func grpcPercentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// A mapper whose filter does not match leaves the reply as the router sent
// it; the demo config's GET-only HTML override with its content type.
func TestLocalReplyMapperNotMatching(t *testing.T) {
	p := servertest.Start(t, localReplyBootstrap(servertest.DeadPort(t), `mappers:
- filter: {header_filter: {header: {name: ":method", string_match: {exact: GET}}}}
  body_format_override:
    text_format_source: {inline_string: "<h1>%LOCAL_REPLY_BODY%</h1>"}
    content_type: "text/html; charset=UTF-8"`))
	for _, tc := range []struct {
		method, body, ctype string
	}{
		{"POST", "no healthy upstream", "text/plain"},
		{"GET", "<h1>no healthy upstream</h1>", "text/html; charset=UTF-8"},
	} {
		req, _ := http.NewRequest(tc.method, p.URL("front", "/nh"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || string(b) != tc.body || resp.Header.Get("Content-Type") != tc.ctype {
			t.Fatalf("%s: got %d %q %q, want 503 %q %q", tc.method, resp.StatusCode, b, resp.Header.Get("Content-Type"), tc.body, tc.ctype)
		}
	}
}

func TestLocalReplyConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, lrc, want string
	}{
		{"mapper without filter", "mappers:\n- status_code: 502", "local_reply_config.mappers[0].filter: value is required"},
		{"status code out of range", "mappers:\n- {filter: {not_health_check_filter: {}}}\n- {filter: {not_health_check_filter: {}}, status_code: 600}",
			"local_reply_config.mappers[1].status_code: value must be inside range [200, 600)"},
		{"bad filter", "mappers:\n- filter: {metadata_filter: {}}", "local_reply_config.mappers[0].filter.metadata_filter: not supported"},
		{"bad override", "mappers:\n- filter: {not_health_check_filter: {}}\n  body_format_override: {text_format: \"%NOPE%\"}",
			"local_reply_config.mappers[0].body_format_override.text_format: not supported field in StreamInfo: NOPE"},
		{"bad body file", "mappers:\n- filter: {not_health_check_filter: {}}\n  body: {filename: /nonexistent/lr}",
			"local_reply_config.mappers[0].body.filename: open /nonexistent/lr"},
		{"bad header", "mappers:\n- filter: {not_health_check_filter: {}}\n  headers_to_add: [{header: {key: x, value: \"%NOPE%\"}}]",
			"local_reply_config.mappers[0].headers_to_add[0]"},
		{"bad body_format", "body_format: {json_format: {a: {b: true}}}", "local_reply_config.body_format.json_format: a: b: "},
		{"formatter extensions", "body_format: {text_format: x, formatters: [{name: f, typed_config: {\"@type\": type.googleapis.com/google.protobuf.Empty}}]}",
			"local_reply_config.body_format.formatters: formatter extensions (f) are not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := localReplyBootstrap(servertest.DeadPort(t), tc.lrc)
			b, err := bootstrap.LoadBytes("lr.yaml", []byte(y))
			if err == nil {
				_, err = server.New(server.Options{Bootstrap: b, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// Direct responses and redirects are local replies, as in Envoy: the
// route's response headers and the location ride on them, and
// local_reply_config formats their bodies too.
func TestLocalReplyDirectResponse(t *testing.T) {
	routes := `- match: {prefix: "/dr"}
  direct_response: {status: 200, body: {inline_string: "hi"}}
  response_headers_to_add: [{header: {key: x-route, value: r1}}]
- match: {prefix: "/redir"}
  redirect: {host_redirect: example.com}`
	y := httpBootstrap(0, routes, "local_reply_config:\n"+indent(`body_format: {text_format: "[%RESPONSE_CODE%] %LOCAL_REPLY_BODY%"}`, 2))
	p := servertest.Start(t, y)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path, body, route, location string
		status                      int
	}{
		{"/dr", "[200] hi", "r1", "", 200},
		{"/redir", "[301] ", "", "http://example.com/redir", 301},
	} {
		resp, err := noRedirect.Get(p.URL("front", tc.path))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || string(b) != tc.body || resp.Header.Get("X-Route") != tc.route ||
			resp.Header.Get("Location") != tc.location {
			t.Errorf("%s: %d %q x-route %q location %q", tc.path, resp.StatusCode, b, resp.Header.Get("X-Route"), resp.Header.Get("Location"))
		}
	}
}

package grpchttp1bridge_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	_ "github.com/outrider-proxy/outrider/filters/all"
	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// rawCodec passes gRPC messages as the bytes they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

// startGRPC runs a grpc-go server answering every method: /echo/ok echoes
// the message with "echo:" before it, /echo/fail fails with NOT_FOUND after
// sending a message, /echo/empty fails at once (a trailers-only response).
// Each call's path is sent on paths.
func startGRPC(t *testing.T, paths chan<- string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, st grpc.ServerStream) error {
		m, _ := grpc.MethodFromServerStream(st)
		select {
		case paths <- m:
		default:
		}
		var in []byte
		if err := st.RecvMsg(&in); err != nil {
			return err
		}
		switch m {
		case "/echo/ok":
			out := append([]byte("echo:"), in...)
			return st.SendMsg(&out)
		case "/echo/fail":
			out := []byte("partial")
			if err := st.SendMsg(&out); err != nil {
				return err
			}
			return status.Error(codes.NotFound, "no such thing")
		default:
			return status.Error(codes.Unavailable, "empty")
		}
	}))
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().(*net.TCPAddr).Port
}

func config(grpcPort int, filterCfg string) string {
	l := filtertest.Listener("l", `
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/"}
    route: {cluster: grpc}`, `
- name: envoy.filters.http.grpc_http1_bridge
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_http1_bridge.v3.Config`+filterCfg+`}`)
	return filtertest.Config(1, l) + fmt.Sprintf(`  - name: grpc
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: grpc, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, grpcPort)
}

func frame(msg string) string {
	return string(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))) + msg
}

func TestBridge(t *testing.T) {
	paths := make(chan string, 8)
	p := servertest.Start(t, config(startGRPC(t, paths), `, upgrade_protobuf_to_grpc: true, ignore_query_parameters: true`))
	c := &http.Client{}
	for _, tc := range []struct {
		name, path, ctype, body   string
		status                    int
		grpcStatus, grpcMsg, want string
		wantPath                  string
	}{
		{"ok", "/echo/ok", "application/grpc", frame("hi"), 200, "0", "", frame("echo:hi"), "/echo/ok"},
		{"query dropped", "/echo/ok?x=1", "application/grpc", frame("q"), 200, "0", "", frame("echo:q"), "/echo/ok"},
		{"error after a message", "/echo/fail", "application/grpc+proto", frame("x"), 503, "5", "no such thing", frame("partial"), "/echo/fail"},
		// A trailers-only response is headers with end of stream: Envoy's
		// filter passes it on untouched.
		{"trailers only", "/echo/empty", "application/grpc", frame("x"), 200, "14", "empty", "", "/echo/empty"},
		{"protobuf upgraded", "/echo/ok", "application/x-protobuf", "pb", 200, "0", "", "echo:pb", "/echo/ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := filtertest.NewRequest(t, "POST", p.URL("l", tc.path), tc.body, "content-type", tc.ctype)
			resp, body := filtertest.Do(t, c, req)
			if resp.StatusCode != tc.status || body != tc.want {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.want)
			}
			if g := resp.Header.Get("grpc-status"); g != tc.grpcStatus {
				t.Errorf("grpc-status %q, want %q", g, tc.grpcStatus)
			}
			if g := resp.Header.Get("grpc-message"); g != tc.grpcMsg {
				t.Errorf("grpc-message %q, want %q", g, tc.grpcMsg)
			}
			if tc.status == 503 || tc.grpcStatus == "0" {
				if resp.ContentLength != int64(len(tc.want)) {
					t.Errorf("content-length %d, want %d", resp.ContentLength, len(tc.want))
				}
			}
			if got := <-paths; got != tc.wantPath {
				t.Errorf("upstream path %q, want %q", got, tc.wantPath)
			}
		})
	}
}

// TestBridgeChunkedProtobuf sends an upgraded body in several chunks: the
// filter buffers it and frames it whole.
func TestBridgeChunkedProtobuf(t *testing.T) {
	paths := make(chan string, 8)
	p := servertest.Start(t, config(startGRPC(t, paths), `, upgrade_protobuf_to_grpc: true`))
	pr, pw := io.Pipe()
	go func() {
		for _, s := range []string{"ab", "cd", "ef"} {
			pw.Write([]byte(s))
			time.Sleep(20 * time.Millisecond) // separate pieces at the proxy (coverage only)
		}
		pw.Close()
	}()
	req, err := http.NewRequest("POST", p.URL("l", "/echo/ok"), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("content-type", "application/x-protobuf")
	resp, body := filtertest.Do(t, &http.Client{}, req)
	if resp.StatusCode != 200 || body != "echo:abcdef" || resp.Header.Get("grpc-status") != "0" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

// TestNoUpgrade: without upgrade_protobuf_to_grpc a protobuf request goes on
// as it is (grpc-go refuses its content type with 415).
func TestNoUpgrade(t *testing.T) {
	paths := make(chan string, 8)
	p := servertest.Start(t, config(startGRPC(t, paths), ``))
	req := filtertest.NewRequest(t, "POST", p.URL("l", "/echo/ok?x=1"), "pb", "content-type", "application/x-protobuf")
	resp, _ := filtertest.Do(t, &http.Client{}, req)
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("got %d %v, want grpc-go's 415", resp.StatusCode, resp.Header)
	}
}

// TestBridgeResponseTooLarge: a bridged response over the buffer limit
// becomes the connection manager's local reply, gRPC-shaped for a gRPC
// request (200, grpc-status 2), as Envoy's
// HittingGrpcFilterLimitBufferingHeaders integration test.
func TestBridgeResponseTooLarge(t *testing.T) {
	paths := make(chan string, 8)
	y := config(startGRPC(t, paths), ``)
	y = strings.Replace(y, "\n    filter_chains:", "\n    per_connection_buffer_limit_bytes: 1024\n    filter_chains:", 1)
	if !strings.Contains(y, "per_connection_buffer_limit_bytes") {
		t.Fatal("no buffer limit in config")
	}
	p := servertest.Start(t, y)
	req := filtertest.NewRequest(t, "POST", p.URL("l", "/echo/ok"), frame(strings.Repeat("x", 64<<10)), "content-type", "application/grpc")
	resp, _ := filtertest.Do(t, &http.Client{}, req)
	if resp.StatusCode != 200 || resp.Header.Get("grpc-status") != "2" {
		t.Fatalf("got %d %v, want 200 with grpc-status 2", resp.StatusCode, resp.Header)
	}
	if got := p.Stat("http.l.rs_too_large"); got != 1 {
		t.Errorf("rs_too_large %d", got)
	}
}

package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// probe is an HTTP filter for these tests, configured by a
// google.protobuf.Struct: {mode: ..., name: ...}. Modes:
//   - tag: adds "x-dec: name" going up and "x-enc: name" coming back;
//   - reply: answers 403 locally;
//   - buffer: holds the request until its end (StopAndBuffer), then sets
//     content-length, as Envoy's buffer filter does;
//   - upper: buffers the response body and upper-cases it;
//   - per_route: copies its typed_per_filter_config's "value" into x-per-route.
type probeConfig struct{ mode, name string }

type probe struct {
	httpfilter.Callbacks
	cfg *probeConfig
}

func init() {
	httpfilter.Registry.Register("test.probe", []string{"google.protobuf.Struct"}, httpfilter.Factory{
		Create: func(_ *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
			s := &structpb.Struct{}
			if err := a.UnmarshalTo(s); err != nil {
				return nil, err
			}
			m := s.AsMap()
			return &probeConfig{mode: fmt.Sprint(m["mode"]), name: fmt.Sprint(m["name"])}, nil
		},
	})
}

func (c *probeConfig) New(cb httpfilter.Callbacks) any { return &probe{Callbacks: cb, cfg: c} }

func (p *probe) DecodeHeaders(h *headers.Map, end bool) httpfilter.Status {
	switch p.cfg.mode {
	case "tag":
		h.Add("x-dec", p.cfg.name)
	case "reply":
		p.SendLocalReply(403, "denied by "+p.cfg.name, "probe_denied", 0)
		return httpfilter.Stop
	case "buffer":
		if !end {
			return httpfilter.Stop
		}
	case "per_route":
		if a := p.Route().PerFilterConfig(p.cfg.name); a != nil {
			s := &structpb.Struct{}
			if a.UnmarshalTo(s) == nil {
				h.Set("x-per-route", fmt.Sprint(s.AsMap()["value"]))
			}
		}
	}
	return httpfilter.Continue
}

func (p *probe) DecodeData(b []byte, end bool) httpfilter.Status {
	if p.cfg.mode == "buffer" {
		if !end {
			return httpfilter.StopAndBuffer
		}
		p.RequestHeaders().SetInt("content-length", int64(len(*p.DecodingBuffer())))
		p.RequestHeaders().Del("transfer-encoding")
	}
	return httpfilter.Continue
}

func (p *probe) DecodeTrailers(*headers.Map) httpfilter.Status { return httpfilter.Continue }

func (p *probe) EncodeHeaders(h *headers.Map, end bool) httpfilter.Status {
	switch p.cfg.mode {
	case "tag":
		h.Add("x-enc", p.cfg.name)
	case "upper":
		if !end {
			h.Del("content-length")
			return httpfilter.Stop
		}
	}
	return httpfilter.Continue
}

func (p *probe) EncodeData(b []byte, end bool) httpfilter.Status {
	if p.cfg.mode == "upper" {
		if !end {
			return httpfilter.StopAndBuffer
		}
		body := p.EncodingBuffer()
		if len(*body) == 0 { // the whole body came in this one call
			body = &b
		}
		copy(*body, bytes.ToUpper(*body))
	}
	return httpfilter.Continue
}

func (p *probe) EncodeTrailers(*headers.Map) httpfilter.Status { return httpfilter.Continue }

func probeFilter(mode, name string) string {
	return fmt.Sprintf(`- name: %s
  typed_config: {"@type": type.googleapis.com/google.protobuf.Struct, value: {mode: %s, name: %s}}`, name, mode, name)
}

// filterBootstrap is httpBootstrap with the given HTTP filters before the router.
func filterBootstrap(upPort int, routes string, filters ...string) string {
	yaml := httpBootstrap(upPort, routes, "")
	return strings.Replace(yaml, "          http_filters:\n", "          http_filters:\n"+indent(strings.Join(filters, "\n"), 10)+"\n", 1)
}

func TestHTTPFilterModel(t *testing.T) {
	echo := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen-Dec", strings.Join(r.Header.Values("X-Dec"), ","))
		w.Header().Set("X-Seen-Per-Route", r.Header.Get("X-Per-Route"))
		w.Header().Set("X-Seen-Length", fmt.Sprint(r.ContentLength))
		w.Write(b)
	})
	perRoute := `- match: {prefix: "/special"}
  route: {cluster: up}
  typed_per_filter_config:
    pr: {"@type": type.googleapis.com/google.protobuf.Struct, value: {value: special}}
- match: {prefix: "/"}
  route: {cluster: up}`

	t.Run("decoders in order, encoders in reverse", func(t *testing.T) {
		p := servertest.Start(t, filterBootstrap(echo.port(), routeToUp, probeFilter("tag", "a"), probeFilter("tag", "b")))
		resp, err := http.Get(p.URL("front", "/"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Seen-Dec"); got != "a,b" {
			t.Errorf("upstream saw x-dec %q, want a,b", got)
		}
		if got := strings.Join(resp.Header.Values("X-Enc"), ","); got != "b,a" {
			t.Errorf("client saw x-enc %q, want b,a", got)
		}
	})
	t.Run("local reply stops the chain", func(t *testing.T) {
		p := servertest.Start(t, filterBootstrap(echo.port(), routeToUp, probeFilter("tag", "a"), probeFilter("reply", "deny")))
		resp, err := http.Get(p.URL("front", "/"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || string(b) != "denied by deny" || resp.Header.Get("X-Enc") != "a" {
			t.Errorf("got %d %q x-enc %q; want 403 through the encoder of the earlier filter", resp.StatusCode, b, resp.Header.Get("X-Enc"))
		}
		p.WaitStat("http.ingress.downstream_rq_4xx", 1)
		if p.Stat("cluster.up.upstream_rq_total") != 0 {
			t.Errorf("the upstream was called")
		}
	})
	t.Run("buffering the request body, up to the buffer limit", func(t *testing.T) {
		yaml := strings.Replace(filterBootstrap(echo.port(), routeToUp, probeFilter("buffer", "buf")),
			"  - name: front\n", "  - name: front\n    per_connection_buffer_limit_bytes: 65536\n", 1)
		p := servertest.Start(t, yaml)
		body := strings.Repeat("x", 40000)
		req, _ := http.NewRequest("POST", p.URL("front", "/"), io.MultiReader(strings.NewReader(body[:20000]), strings.NewReader(body[20000:])))
		req.ContentLength = -1 // chunked: the filter turns it into a content-length request
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != body || resp.Header.Get("X-Seen-Length") != "40000" {
			t.Fatalf("got %d, %d bytes, upstream length %q", resp.StatusCode, len(b), resp.Header.Get("X-Seen-Length"))
		}
		req, _ = http.NewRequest("POST", p.URL("front", "/"), strings.NewReader(strings.Repeat("y", 100000)))
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("over the buffer limit: %d, want 413", resp.StatusCode)
		}
		p.WaitStat("http.ingress.downstream_rq_too_large", 1)
	})
	t.Run("buffering the response body", func(t *testing.T) {
		p := servertest.Start(t, filterBootstrap(echo.port(), routeToUp, probeFilter("upper", "up")))
		resp, err := http.Post(p.URL("front", "/"), "text/plain", strings.NewReader("hello world"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "HELLO WORLD" {
			t.Fatalf("body %q, want HELLO WORLD", b)
		}
	})
	t.Run("typed_per_filter_config", func(t *testing.T) {
		p := servertest.Start(t, filterBootstrap(echo.port(), perRoute, probeFilter("per_route", "pr")))
		for path, want := range map[string]string{"/special": "special", "/plain": ""} {
			resp, err := http.Get(p.URL("front", path))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Seen-Per-Route"); got != want {
				t.Errorf("%s: x-per-route %q, want %q", path, got, want)
			}
		}
	})
}

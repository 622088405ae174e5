package server_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// request_mirror_policies.cluster_header names the shadow cluster in a
// request header (no header, or an unknown cluster: no shadow);
// disable_shadow_host_suffix_append keeps the host as it is.
func TestMirrorClusterHeader(t *testing.T) {
	shadowHosts := make(chan string, 10)
	shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		shadowHosts <- r.Host
	})
	primary := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "primary") })
	yaml := resilienceBootstrap(`, request_mirror_policies: [{cluster_header: X-Mirror-To, disable_shadow_host_suffix_append: true}]`, "", primary.port())
	yaml += clusterYAML("shadow", "", shadow.port())
	p := servertest.Start(t, yaml)
	for _, tc := range []struct {
		name, header string
		shadowed     bool
	}{
		{"no header", "", false},
		{"unknown cluster", "nope", false},
		{"shadow cluster", "shadow", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", p.URL("front", "/x"), nil)
			req.Host = "api.test"
			if tc.header != "" {
				req.Header.Set("X-Mirror-To", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "primary" {
				t.Fatalf("primary: %d %q", resp.StatusCode, b)
			}
			wait := 200 * time.Millisecond // long enough for a shadow sent at all to arrive
			if tc.shadowed {
				wait = 5 * time.Second
			}
			select {
			case h := <-shadowHosts:
				if !tc.shadowed {
					t.Fatalf("shadow request (host %q) without a shadow cluster", h)
				}
				if h != "api.test" {
					t.Errorf("shadow host %q, want api.test (no -shadow suffix)", h)
				}
			case <-time.After(wait):
				if tc.shadowed {
					t.Fatal("no shadow request")
				}
			}
		})
	}
}

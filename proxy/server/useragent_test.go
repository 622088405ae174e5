package server_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// add_user_agent: the request upstream carries the node's cluster in
// x-envoy-downstream-service-cluster and its id in
// x-envoy-downstream-service-node, and the cluster as user-agent when the
// client sent none; a client's user-agent is kept.
func TestAddUserAgent(t *testing.T) {
	got := make(chan http.Header, 4)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		io.WriteString(w, "ok")
	})
	boot := "node: {id: node-7, cluster: svc-a}\n" + httpBootstrap(up.port(), routeToUp, "add_user_agent: true")
	p := servertest.Start(t, boot)
	for _, tc := range []struct {
		name, ua, wantUA string
	}{
		{"client user-agent kept", "curl/8", "curl/8"},
		{"no user-agent", "", "svc-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", p.Addr("front"), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			req := "GET / HTTP/1.1\r\nHost: a\r\nx-envoy-downstream-service-cluster: spoofed\r\n"
			if tc.ua != "" {
				req += "User-Agent: " + tc.ua + "\r\n"
			}
			io.WriteString(c, req+"\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			var h http.Header
			select {
			case h = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("no request upstream")
			}
			if h.Get("X-Envoy-Downstream-Service-Cluster") != "svc-a" || h.Get("X-Envoy-Downstream-Service-Node") != "node-7" ||
				h.Get("User-Agent") != tc.wantUA {
				t.Fatalf("upstream headers: cluster %q node %q user-agent %q", h.Get("X-Envoy-Downstream-Service-Cluster"),
					h.Get("X-Envoy-Downstream-Service-Node"), h.Get("User-Agent"))
			}
		})
	}
}

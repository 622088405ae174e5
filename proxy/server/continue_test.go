package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// Expect: 100-continue. By default the connection manager answers it
// itself; with proxy_100_continue the Expect header goes upstream and the
// client's 100 Continue is the upstream's: an upstream that refuses the
// request before reading its body (417 here) means the client never sends
// the body, and one that accepts relays its 100 to the client.
func TestProxy100Continue(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-refuse") != "" {
			w.WriteHeader(http.StatusExpectationFailed) // before reading the body: no 100 goes out
			return
		}
		b, _ := io.ReadAll(r.Body) // net/http sends 100 Continue on this first read
		io.WriteString(w, "expect="+r.Header.Get("Expect")+" body="+string(b))
	})
	for _, tc := range []struct {
		name, hcm, refuse string
		wantInterim       bool   // a 100 Continue reaches the client
		wantFinal         string // status and body
	}{
		{"local", "", "", true, "200 expect= body=hello"},
		{"proxied", "proxy_100_continue: true", "", true, "200 expect=100-continue body=hello"},
		{"proxied refusal", "proxy_100_continue: true", "yes", false, "417 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := servertest.Start(t, httpBootstrap(up.port(), `- match: {prefix: "/"}
  route: {cluster: up}`, tc.hcm))
			c, err := net.DialTimeout("tcp", p.Addr("front"), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			req := "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
			if tc.refuse != "" {
				req += "x-refuse: 1\r\n"
			}
			io.WriteString(c, req+"\r\n")
			br := bufio.NewReader(c)
			status, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("no answer to the headers: %v", err)
			}
			gotInterim := strings.HasPrefix(status, "HTTP/1.1 100")
			if gotInterim != tc.wantInterim {
				t.Fatalf("first line %q, want a 100 Continue: %v", status, tc.wantInterim)
			}
			if gotInterim {
				if blank, _ := br.ReadString('\n'); blank != "\r\n" {
					t.Fatalf("after the 100: %q", blank)
				}
				io.WriteString(c, "hello")
			} else {
				// The final response came first: put its status line back.
				br = bufio.NewReader(io.MultiReader(strings.NewReader(status), br))
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := fmt.Sprintf("%d %s", resp.StatusCode, b); got != tc.wantFinal {
				t.Errorf("final response %d %q, want %q", resp.StatusCode, b, tc.wantFinal)
			}
		})
	}
}

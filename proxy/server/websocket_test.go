package server_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// wsUpstream accepts an HTTP/1.1 Upgrade: websocket with 101, then echoes
// bytes upper-cased until the client half-closes, then says "BYE".
func wsUpstream(t *testing.T) int {
	return servertest.ServeTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(req.Header.Get("Connection")), "upgrade") {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		buf := make([]byte, 4096)
		for {
			n, err := br.Read(buf)
			if n > 0 {
				c.Write([]byte(strings.ToUpper(string(buf[:n]))))
			}
			if err != nil {
				c.Write([]byte("BYE"))
				return
			}
		}
	})
}

func TestWebSocketUpgrade(t *testing.T) {
	up := wsUpstream(t)
	upgrade := "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n"
	t.Run("allowed", func(t *testing.T) {
		p := servertest.Start(t, httpBootstrap(up, routeToUp, "upgrade_configs: [{upgrade_type: websocket}]"))
		c, err := net.Dial("tcp", p.Addr("front"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, upgrade)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
			t.Fatalf("upgrade answer: %v %v", resp, err)
		}
		io.WriteString(c, "hello ")
		io.WriteString(c, "tunnel")
		c.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(br)
		if string(got) != "HELLO TUNNELBYE" {
			t.Fatalf("through the tunnel: %q", got)
		}
		p.WaitStat("http.ingress.downstream_cx_upgrades_total", 1)
		p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0)
	})
	t.Run("not configured is 403", func(t *testing.T) {
		p := servertest.Start(t, httpBootstrap(up, routeToUp, ""))
		resp, _ := rawRequest(t, p.Addr("front"), upgrade)
		if resp.StatusCode != 403 {
			t.Fatalf("status %d, want 403 upgrade_failed", resp.StatusCode)
		}
	})
	t.Run("a route can turn it off", func(t *testing.T) {
		routes := `- match: {prefix: "/"}
  route: {cluster: up, upgrade_configs: [{upgrade_type: websocket, enabled: false}]}`
		p := servertest.Start(t, httpBootstrap(up, routes, "upgrade_configs: [{upgrade_type: websocket}]"))
		resp, _ := rawRequest(t, p.Addr("front"), upgrade)
		if resp.StatusCode != 403 {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
}

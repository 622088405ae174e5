package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// healthCloseYAML is tcpBootstrap's tcp_proxy to the echo cluster with an
// active TCP health check and close_connections_on_host_health_failure set
// to the given value.
func healthCloseYAML(set bool, port int) string {
	return strings.Replace(tcpBootstrap(port), "    connect_timeout: 1s\n", fmt.Sprintf(`    connect_timeout: 1s
    close_connections_on_host_health_failure: %v
    health_checks: [{timeout: 1s, interval: 0.05s, no_traffic_interval: 0.05s, unhealthy_threshold: 1, healthy_threshold: 1, reuse_connection: false, tcp_health_check: {}}]
`, set), 1)
}

// close_connections_on_host_health_failure: when the only host fails its
// active health check (its listener closes; the proxied connection itself
// stays up), the tcp_proxy connection to it is closed, but only with the
// field set.
func TestCloseConnectionsOnHostHealthFailure(t *testing.T) {
	for _, set := range []bool{true, false} {
		t.Run(fmt.Sprint(set), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() { defer c.Close(); io.Copy(c, c) }()
				}
			}()
			p := servertest.Start(t, healthCloseYAML(set, ln.Addr().(*net.TCPAddr).Port))
			p.WaitStat("cluster.echo.membership_healthy", 1)
			c, err := net.Dial("tcp", p.Addr("tcp"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)
			echo := func() error {
				c.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := io.WriteString(c, "ping\n"); err != nil {
					return err
				}
				line, err := r.ReadString('\n')
				if err == nil && line != "ping\n" {
					err = fmt.Errorf("echoed %q", line)
				}
				return err
			}
			if err := echo(); err != nil {
				t.Fatal(err)
			}
			ln.Close() // health checks now fail to connect; the open connection stays
			p.WaitStat("cluster.echo.membership_healthy", 0)
			if set {
				c.SetReadDeadline(time.Now().Add(3 * time.Second))
				if _, err := r.ReadByte(); err != io.EOF {
					t.Errorf("after the host failed its health check: read %v, want EOF (closed)", err)
				}
				return
			}
			time.Sleep(100 * time.Millisecond)
			if err := echo(); err != nil {
				t.Errorf("without the field the connection must stay: %v", err)
			}
		})
	}
}

// Package bench measures outrider's hot paths on loopback: keep-alive HTTP/1
// requests through listener, connection manager, router and upstream pool,
// and bulk bytes through tcp_proxy. Run with `make bench`; numbers go in
// bench/README.md.
package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

const httpConfig = `
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: up}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bulk
          cluster: sink
  clusters:
  - name: up
    load_assignment:
      cluster_name: up
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
  - name: sink
    load_assignment:
      cluster_name: sink
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`

// fixedUpstream answers every request on a keep-alive connection with a
// fixed 2-byte response, reading requests with a minimal parser so the
// upstream costs as little as possible.
func fixedUpstream(b *testing.B) int {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	return servertest.ServeTCP(b, func(c net.Conn) {
		br := bufio.NewReaderSize(c, 16<<10)
		for {
			// Requests have no body: read lines until the blank one.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
}

// sinkUpstream reads and discards everything.
func sinkUpstream(b *testing.B) int {
	return servertest.ServeTCP(b, func(c net.Conn) { io.Copy(io.Discard, c) })
}

func startServer(b *testing.B) *servertest.Proxy {
	return servertest.Start(b, fmt.Sprintf(httpConfig, fixedUpstream(b), sinkUpstream(b)))
}

// BenchmarkHTTP1Proxy sends keep-alive GETs through the proxy, one at a
// time on one connection. allocs/op counts the whole process (client,
// proxy and upstream goroutines).
func BenchmarkHTTP1Proxy(b *testing.B) {
	p := startServer(b)
	c, err := net.Dial("tcp", p.Addr("front"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReaderSize(c, 16<<10)
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		clen := -1
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) <= 2 {
				break
			}
			if len(line) > 16 && (line[0] == 'c' || line[0] == 'C') && string(line[1:15]) == "ontent-length:" {
				clen = 0
				for _, ch := range line[15:] {
					if ch >= '0' && ch <= '9' {
						clen = clen*10 + int(ch-'0')
					}
				}
			}
		}
		if clen < 0 {
			b.Fatal("response without content-length")
		}
		if _, err := br.Discard(clen); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ { // warm the pools
		roundTrip()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		roundTrip()
	}
}

// BenchmarkTCPProxy pushes bulk bytes through tcp_proxy to a sink.
func BenchmarkTCPProxy(b *testing.B) {
	p := startServer(b)
	c, err := net.Dial("tcp", p.Addr("tcp"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

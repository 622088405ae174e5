package upstream

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeDNS answers A queries for name with 127.0.0.1 (others: NXDOMAIN) on
// UDP and TCP at one port, counting the queries of each transport.
type fakeDNS struct {
	addr     string
	udp, tcp atomic.Int64
}

func startFakeDNS(t *testing.T, name string) *fakeDNS {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ln == nil; try++ { // a UDP port whose TCP twin is free
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err != nil {
			pc.Close()
			if try == 20 {
				t.Fatalf("no UDP port with its TCP twin free: %v", err)
			}
		}
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	f := &fakeDNS{addr: pc.LocalAddr().String()}
	answer := func(q []byte) []byte {
		var p dnsmessage.Parser
		h, err := p.Start(q)
		if err != nil {
			return nil
		}
		qs, err := p.AllQuestions()
		if err != nil || len(qs) != 1 {
			return nil
		}
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
		hit := strings.EqualFold(qs[0].Name.String(), name) && qs[0].Type == dnsmessage.TypeA
		if !hit && strings.EqualFold(qs[0].Name.String(), name) {
			rh.RCode = dnsmessage.RCodeSuccess // name exists, no record of this type
		} else if !hit {
			rh.RCode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.EnableCompression()
		b.StartQuestions()
		b.Question(qs[0])
		b.StartAnswers()
		if hit {
			b.AResource(dnsmessage.ResourceHeader{Name: qs[0].Name, Class: dnsmessage.ClassINET, TTL: 1}, dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}})
		}
		out, _ := b.Finish()
		return out
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			f.udp.Add(1)
			if out := answer(buf[:n]); out != nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					var l [2]byte
					if _, err := io.ReadFull(c, l[:]); err != nil {
						return
					}
					q := make([]byte, binary.BigEndian.Uint16(l[:]))
					if _, err := io.ReadFull(c, q); err != nil {
						return
					}
					f.tcp.Add(1)
					out := answer(q)
					binary.BigEndian.PutUint16(l[:], uint16(len(out)))
					c.Write(append(l[:], out...))
				}
			}()
		}
	}()
	return f
}

// A STRICT_DNS cluster asks the DNS servers its config names: dns_resolvers
// with use_tcp_for_dns_lookups, dns_resolution_config, and the c-ares
// typed_dns_resolver_config.
func TestClusterDNSResolvers(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		tcp         bool
	}{
		{"dns_resolvers", `"dns_resolvers":[{"socket_address":{"address":"127.0.0.1","port_value":%PORT%}}]`, false},
		{"use_tcp_for_dns_lookups", `"use_tcp_for_dns_lookups":true,"dns_resolvers":[{"socket_address":{"address":"127.0.0.1","port_value":%PORT%}}]`, true},
		{"dns_resolution_config", `"dns_resolution_config":{"resolvers":[{"socket_address":{"address":"127.0.0.1","port_value":%PORT%}}],"dns_resolver_options":{"no_default_search_domain":true}}`, false},
		{"c-ares", `"typed_dns_resolver_config":{"name":"envoy.network.dns_resolver.cares","typed_config":{"@type":"type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig","resolvers":[{"socket_address":{"address":"127.0.0.1","port_value":%PORT%}}],"dns_resolver_options":{"use_tcp_for_dns_lookups":true}}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dns := startFakeDNS(t, "backend.outrider.test.")
			_, port, _ := net.SplitHostPort(dns.addr)
			m, _ := newTestManager(t)
			js := `{"name":"d","type":"STRICT_DNS","connect_timeout":"1s","dns_lookup_family":"V4_ONLY",` +
				strings.ReplaceAll(tc.field, "%PORT%", port) +
				`,"load_assignment":{"cluster_name":"d","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"backend.outrider.test","port_value":8080}}}}]}]}}`
			c := mustAdd(t, m, js)
			deadline := time.Now().Add(5 * time.Second)
			for len(c.Hosts()) == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if hs := c.Hosts(); len(hs) != 1 || hs[0].Addr.String() != "127.0.0.1:8080" {
				t.Fatalf("hosts %v, want 127.0.0.1:8080 from the fake DNS server", hs)
			}
			if tc.tcp && (dns.tcp.Load() == 0 || dns.udp.Load() != 0) {
				t.Errorf("queries: %d over TCP, %d over UDP; want TCP only", dns.tcp.Load(), dns.udp.Load())
			}
			if !tc.tcp && dns.udp.Load() == 0 {
				t.Errorf("no UDP query reached the configured server")
			}
		})
	}
	m, _ := newTestManager(t)
	err := m.AddOrUpdate(parseCluster(t, `{"name":"x","type":"STRICT_DNS","typed_dns_resolver_config":{"name":"apple","typed_config":{"@type":"type.googleapis.com/google.protobuf.StringValue","value":"x"}},"load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"a.test","port_value":80}}}}]}]}}`))
	if err == nil || !strings.Contains(err.Error(), "typed_dns_resolver_config (apple)") {
		t.Errorf("an unsupported resolver: %v, want an error naming typed_dns_resolver_config", err)
	}
}

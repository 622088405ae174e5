package server_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/listenerfilter"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// setDst is a test listener filter standing in for an iptables redirect:
// it restores the local address named by its StringValue config, as
// original_dst does from SO_ORIGINAL_DST.
type setDst netip.AddrPort

func (d setDst) OnAccept(_ *net.Conn, info *streaminfo.Conn) error {
	info.LocalAddr, info.LocalAddrRestored = netip.AddrPort(d), true
	return nil
}

func init() {
	listenerfilter.Registry.Register("outrider.test.set_dst", []string{"google.protobuf.StringValue"},
		func(cfg *anypb.Any, _ stats.Scope) (listenerfilter.Filter, error) {
			v := &wrapperspb.StringValue{}
			if err := cfg.UnmarshalTo(v); err != nil {
				return nil, err
			}
			ap, err := netip.ParseAddrPort(v.GetValue())
			if err != nil {
				return nil, err
			}
			return setDst(ap), nil
		})
}

// TestListenerHandoff needs no root: a listener filter restores the
// destination. A use_original_dst listener hands the connection to the
// bind_to_port: false listener of that destination (exact address first,
// then the wildcard one), which counts it and serves it with its own
// listener filters and chains; a destination without a listener stays.
func TestListenerHandoff(t *testing.T) {
	front := func(name, dst string) string {
		return fmt.Sprintf(`
  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    use_original_dst: true
    listener_filters:
    - name: outrider.test.set_dst
      typed_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: "%s"}
    filter_chains:
    - filters: [%s]`, name, dst, directHCM("stayed on "+name))
	}
	hidden := func(name, addr, body string) string {
		return fmt.Sprintf(`
  - name: %s
    address: {socket_address: {address: %s, port_value: 80}}
    bind_to_port: false
    listener_filters:
    - name: envoy.filters.listener.http_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}
    filter_chains:
    - filter_chain_match: {application_protocols: [http/1.1]}
      filters: [%s]`, name, addr, directHCM(body))
	}
	yaml := `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:` + front("to_exact", "198.18.0.10:80") + front("to_wildcard", "198.18.0.99:80") + front("to_none", "198.18.0.10:81") +
		hidden("exact", "198.18.0.10", "exact") + hidden("wildcard", "0.0.0.0", "wildcard") + "\n"
	p := servertest.Start(t, yaml)
	if got := p.Addr("wildcard"); got != "0.0.0.0:80" {
		t.Errorf("bind_to_port: false listener's address = %q, want its configured 0.0.0.0:80", got)
	}
	tests := []struct {
		via, want, wantDst string
	}{
		{"to_exact", "exact", "198.18.0.10:80"},
		{"to_wildcard", "wildcard", "198.18.0.99:80"},
		{"to_none", "stayed on to_none", "198.18.0.10:81"},
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, tt := range tests {
		t.Run(tt.via, func(t *testing.T) {
			resp, err := client.Get(p.URL(tt.via, "/"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != tt.want {
				t.Errorf("body = %q, want %q", body, tt.want)
			}
			if got := resp.Header.Get("x-dst"); got != tt.wantDst {
				t.Errorf("%%DOWNSTREAM_LOCAL_ADDRESS%% = %q, want %q", got, tt.wantDst)
			}
		})
	}
	// Envoy counts a handed-over connection on the listener that serves it only.
	for name, want := range map[string]int64{
		"listener.127.0.0.1_0.downstream_cx_total":            1, // to_none (the three share the stat prefix of their address)
		"listener.198.18.0.10_80.downstream_cx_total":         1,
		"listener.0.0.0.0_80.downstream_cx_total":             1,
		"listener.0.0.0.0_80.http_inspector.http11_found":     1,
		"listener.198.18.0.10_80.http_inspector.http11_found": 1,
	} {
		p.WaitStat(name, want)
	}
}

// directHCM is an http_connection_manager answering every request with body
// and 200, and %DOWNSTREAM_LOCAL_ADDRESS% in the header x-dst.
func directHCM(body string) string {
	return fmt.Sprintf(`{name: envoy.filters.network.http_connection_manager, typed_config: {
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
        stat_prefix: h, http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}],
        route_config: {virtual_hosts: [{name: vh, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: %q}},
          response_headers_to_add: [{header: {key: x-dst, value: "%%DOWNSTREAM_LOCAL_ADDRESS%%"}}]}]}]}}}`, body)
}

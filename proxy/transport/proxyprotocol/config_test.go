package proxyprotocol

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"

	ppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/outrider-proxy/outrider/proxy/transport"
)

// compile builds the transport from its typed_config in YAML.
func compile(t *testing.T, y string) (*Transport, error) {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	m := &ppv3.ProxyProtocolUpstreamTransport{}
	if err := protojson.Unmarshal(j, m); err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	f, err := transport.Registry.Lookup(Name, string(m.ProtoReflect().Descriptor().FullName()))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := f.Upstream(&transport.Context{}, a)
	if err != nil {
		return nil, err
	}
	return tr.(*Transport), nil
}

const raw = `
transport_socket:
  name: envoy.transport_sockets.raw_buffer
  typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}`

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, y, want string }{
		{"no inner", `config: {version: V2}`, "transport_socket: required"},
		{"format string", `config: {added_tlvs: [{type: 1, format_string: {text_format_source: {inline_string: x}}}]}` + raw,
			"config: added_tlvs[0].format_string: not supported"},
		{"both", `config: {added_tlvs: [{type: 1, value: eA==, format_string: {text_format_source: {inline_string: x}}}]}` + raw,
			"only one of"},
		{"neither", `config: {added_tlvs: [{type: 1}]}` + raw, "must be set"},
		{"type", `config: {added_tlvs: [{type: 256, value: eA==}]}` + raw, "added_tlvs[0].type"},
		{"unknown inner", `transport_socket: {name: nope}`, "transport_socket:"},
	} {
		_, err := compile(t, tc.y)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	tr, err := compile(t, "config: {version: V2, pass_through_tlvs: {match_type: INCLUDE_ALL}}\nallow_unspecified_address: true"+raw)
	if err != nil || !tr.v2 || tr.inner != nil || tr.UsesTLS() {
		t.Errorf("accepted config: %v %+v", err, tr)
	}
	if tr, err := compile(t, raw); err != nil || tr.v2 { // no config: V1
		t.Errorf("no config: %v %+v", err, tr)
	}
}

// TestNoDownstream: a dial without a downstream connection (health checks,
// the proxy's own clients) gets Envoy's defaults: v1 with the upstream
// connection's own local and remote addresses, v2 LOCAL.
func TestNoDownstream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 2)
	go func() {
		for range 2 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h, err := Parse(bufio.NewReader(c))
			if err != nil {
				got <- err.Error()
			} else if h.Local {
				got <- "local"
			} else {
				got <- h.Src.String() + " " + h.Dst.String()
			}
			c.Close()
		}
	}()
	for _, v := range []string{"V1", "V2"} {
		tr, err := compile(t, `config: {version: `+v+`}`+raw)
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		wc, err := tr.Wrap(context.Background(), c, "")
		if err != nil || wc != c {
			t.Fatalf("%s: wrap %v", v, err)
		}
		want := "local"
		if v == "V1" {
			want = c.LocalAddr().String() + " " + c.RemoteAddr().String()
		}
		if g := <-got; g != want {
			t.Errorf("%s: %q, want %q", v, g, want)
		}
		c.Close()
	}
}

package hcm

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	_ "github.com/outrider-proxy/outrider/filters/http/router"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func TestHTTP2ProtocolOptions(t *testing.T) {
	u32 := wrapperspb.UInt32
	for _, tc := range []struct {
		name    string
		opts    *corev3.Http2ProtocolOptions
		wantErr string
		check   func(t *testing.T, c *Config)
	}{
		{name: "defaults", check: func(t *testing.T, c *Config) {
			s := c.h2.cfg
			if s.MaxConcurrentStreams != 1024 || s.IdleTimeout != time.Hour || s.MaxFrameSize != 16384 ||
				s.MaxHeaderListSize != 60<<10 || s.InitialStreamWindowSize != 0 || s.PingInterval != 0 {
				t.Fatalf("server %+v", s)
			}
		}},
		{name: "mapped", opts: &corev3.Http2ProtocolOptions{
			MaxConcurrentStreams: u32(7), InitialStreamWindowSize: u32(70000), InitialConnectionWindowSize: u32(1 << 21),
			HpackTableSize: u32(8192), MaxOutboundFrames: u32(10), StreamErrorOnInvalidHttpMessaging: true,
			ConnectionKeepalive: &corev3.KeepaliveSettings{Interval: durationpb.New(time.Second), Timeout: durationpb.New(2 * time.Second)},
		}, check: func(t *testing.T, c *Config) {
			s := c.h2.cfg
			if s.MaxConcurrentStreams != 7 || s.InitialStreamWindowSize != 70000 || s.InitialConnWindowSize != 1<<21 ||
				s.HeaderTableSize != 8192 || s.PingInterval != time.Second || s.PingTimeout != 2*time.Second ||
				c.h2.lim.maxOutbound != 10 {
				t.Fatalf("server %+v limits %+v", s, c.h2.lim)
			}
		}},
		{name: "allow_connect", opts: &corev3.Http2ProtocolOptions{AllowConnect: true}, check: func(t *testing.T, c *Config) {
			if !c.allowConnect || !c.h2.cfg.AllowExtendedConnect {
				t.Fatalf("allowConnect %v, advertised %v", c.allowConnect, c.h2.cfg.AllowExtendedConnect)
			}
		}},
		{name: "metadata", opts: &corev3.Http2ProtocolOptions{AllowMetadata: true}, wantErr: "http2_protocol_options.allow_metadata"},
		{name: "hpack 0", opts: &corev3.Http2ProtocolOptions{HpackTableSize: u32(0)}, wantErr: "http2_protocol_options.hpack_table_size"},
		{name: "window", opts: &corev3.Http2ProtocolOptions{InitialStreamWindowSize: u32(100)}, wantErr: "http2_protocol_options.initial_stream_window_size"},
		{name: "idle interval", opts: &corev3.Http2ProtocolOptions{ConnectionKeepalive: &corev3.KeepaliveSettings{
			ConnectionIdleInterval: durationpb.New(time.Second)}}, wantErr: "connection_keepalive.connection_idle_interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &hcmv3.HttpConnectionManager{
				StatPrefix:           "t",
				CodecType:            hcmv3.HttpConnectionManager_HTTP2,
				Http2ProtocolOptions: tc.opts,
				RouteSpecifier:       &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{}},
			}
			c, err := Compile(&netfilter.Context{Stats: stats.NewStore()}, p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

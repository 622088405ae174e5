package hcm

import (
	"fmt"
	"math"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/h2"
)

// HTTP/2 defaults. max_concurrent_streams deliberately differs from Envoy's
// 2^31-1: Envoy bounds a connection by pausing reads when its output buffer
// fills, which outrider's codec does not, so an unset limit would let one
// client that never opens its flow-control window pile up streams without
// bound. Setting the field explicitly (any value, Envoy's included) is
// honoured.
const (
	envoyMaxConcurrentStreams = 1024     // http2_protocol_options.max_concurrent_streams when unset
	envoyMaxFrameSize         = 16384    // SETTINGS_MAX_FRAME_SIZE Envoy advertises
	defaultH2HeaderBytes      = 60 << 10 // max_request_headers_kb default
)

// h2Server is the HTTP/2 side of a Config, shared by every connection of
// the filter chain: the codec's configuration and the flood limits.
type h2Server struct {
	cfg h2.ServerConfig
	lim h2Limits // flood limits (h2limits.go)
}

// compileHTTP2 maps http2_protocol_options onto the codec's
// h2.ServerConfig.
//
// Mapped: hpack_table_size, max_concurrent_streams (1024 when unset, see
// above), initial_stream_window_size and initial_connection_window_size
// (unset: 1 MiB, not Envoy's 256 MiB, because a stream buffers a whole
// window while Envoy bounds it with the connection buffer limit),
// connection_keepalive.interval/timeout (PING after that long without a
// frame; close when unanswered).
//
// Flood limits, enforced as Envoy's codec does (h2limits.go; defaults
// 10000, 1000, 1, 100, 10): max_outbound_frames,
// max_outbound_control_frames,
// max_consecutive_inbound_frames_with_empty_payload,
// max_inbound_priority_frames_per_stream,
// max_inbound_window_update_frames_per_data_frame_sent. A malformed request
// is answered with a stream reset (PROTOCOL_ERROR) in most cases, which is
// Envoy's stream_error_on_invalid_http_messaging: true behaviour; the field
// is accepted either way.
//
// allow_connect accepts extended CONNECT (RFC 8441: WebSocket over HTTP/2):
// every connection advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, and a stream
// with :protocol is refused with 400 when the field is off.
//
// Refused: allow_metadata,
// custom_settings_parameters, connection_keepalive.connection_idle_interval
// (an upstream option) and every field not listed here.
func (c *Config) compileHTTP2(p *corev3.Http2ProtocolOptions) error {
	const path = "http2_protocol_options"
	s := h2.ServerConfig{
		MaxConcurrentStreams: envoyMaxConcurrentStreams,
		MaxFrameSize:         envoyMaxFrameSize,
		AllowExtendedConnect: true, // refused with 400 by checkUpgrade unless allow_connect
	}
	if p != nil {
		if err := confcheck.Fields(p, path, "hpack_table_size", "max_concurrent_streams",
			"initial_stream_window_size", "initial_connection_window_size", "allow_connect",
			"max_outbound_frames", "max_outbound_control_frames", "max_consecutive_inbound_frames_with_empty_payload",
			"max_inbound_priority_frames_per_stream", "max_inbound_window_update_frames_per_data_frame_sent",
			"stream_error_on_invalid_http_messaging", "override_stream_error_on_invalid_http_message",
			"connection_keepalive"); err != nil {
			return err
		}
		c.allowConnect = p.GetAllowConnect()
		if v := p.GetHpackTableSize(); v != nil {
			if v.GetValue() == 0 {
				return fmt.Errorf("%s.hpack_table_size: 0 (no dynamic table) is not supported by outrider yet", path)
			}
			s.HeaderTableSize = v.GetValue()
		}
		if v := p.GetMaxConcurrentStreams(); v != nil {
			if v.GetValue() < 1 {
				return fmt.Errorf("%s.max_concurrent_streams: must be at least 1", path)
			}
			s.MaxConcurrentStreams = v.GetValue()
		}
		if v := p.GetInitialStreamWindowSize(); v != nil {
			if v.GetValue() < 65535 || v.GetValue() > math.MaxInt32 {
				return fmt.Errorf("%s.initial_stream_window_size: %d is outside [65535, 2147483647]", path, v.GetValue())
			}
			s.InitialStreamWindowSize = v.GetValue()
		}
		if v := p.GetInitialConnectionWindowSize(); v != nil {
			if v.GetValue() < 65535 || v.GetValue() > math.MaxInt32 {
				return fmt.Errorf("%s.initial_connection_window_size: %d is outside [65535, 2147483647]", path, v.GetValue())
			}
			s.InitialConnWindowSize = v.GetValue()
		}
		if ka := p.GetConnectionKeepalive(); ka != nil {
			kpath := path + ".connection_keepalive"
			if err := confcheck.Fields(ka, kpath, "interval", "timeout", "interval_jitter"); err != nil {
				return err
			}
			if d := ka.GetInterval(); d != nil {
				s.PingInterval = d.AsDuration()
			}
			if d := ka.GetTimeout(); d != nil {
				if d.AsDuration() <= 0 {
					return fmt.Errorf("%s.timeout: must be positive", kpath)
				}
				s.PingTimeout = d.AsDuration()
			}
		}
	}
	// Envoy's connection idle_timeout: GOAWAY once no stream has been open
	// for that long.
	s.IdleTimeout = c.idleTimeout
	s.MaxHeaderListSize = defaultH2HeaderBytes
	if n := c.limits.MaxHeaderBytes; n > 0 {
		s.MaxHeaderListSize = uint32(n)
	}
	c.h2 = h2Server{cfg: s, lim: compileLimits(p)}
	return nil
}

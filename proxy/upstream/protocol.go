package upstream

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/transport"
)

// HTTPProtocolOptionsName is the typed_extension_protocol_options key of
// Envoy's upstream HTTP protocol options.
const HTTPProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// DefaultMaxConcurrentStreams is Envoy's upstream HTTP/2
// max_concurrent_streams default.
const DefaultMaxConcurrentStreams = 2147483647

// Protocol is how a cluster chooses the HTTP version it speaks upstream.
type Protocol uint8

const (
	// ProtocolHTTP1 is HTTP/1.1 (the default, explicit http_protocol_options).
	ProtocolHTTP1 Protocol = iota
	// ProtocolHTTP2 is HTTP/2 with prior knowledge (explicit
	// http2_protocol_options, or the deprecated cluster field).
	ProtocolHTTP2
	// ProtocolDownstream is use_downstream_protocol_config: the
	// downstream request's version, among those configured.
	ProtocolDownstream
	// ProtocolAuto is auto_config: HTTP/2 when TLS negotiates "h2" by ALPN,
	// HTTP/1.1 otherwise (and always over plaintext).
	ProtocolAuto
)

// protocolOptions is the compiled HTTP protocol choice of a cluster.
type protocolOptions struct {
	proto    Protocol
	h1, h2   bool   // use_downstream_protocol_config: which are configured
	maxConc  uint32 // http2 max_concurrent_streams
	pingIdle time.Duration
	pingTO   time.Duration
}

var h2Known = []string{"max_concurrent_streams", "connection_keepalive"}

func (po *protocolOptions) setH2(p *corev3.Http2ProtocolOptions, path string) error {
	if err := confcheck.Fields(p, path, h2Known...); err != nil {
		return err
	}
	if v := p.GetMaxConcurrentStreams(); v != nil {
		po.maxConc = v.GetValue()
	}
	if ka := p.GetConnectionKeepalive(); ka != nil {
		if err := confcheck.Fields(ka, confcheck.Join(path, "connection_keepalive"), "interval", "timeout"); err != nil {
			return err
		}
		po.pingIdle = ka.GetInterval().AsDuration()
		po.pingTO = ka.GetTimeout().AsDuration()
	}
	return nil
}

func checkH1(p *corev3.Http1ProtocolOptions, path string) error {
	if p == nil {
		return nil
	}
	return confcheck.Fields(p, path)
}

// compileProtocol reads the cluster's HTTP protocol selection: the typed
// HttpProtocolOptions extension, else the deprecated http2_protocol_options
// and http_protocol_options fields.
func (c *Cluster) compileProtocol(cfg *clusterv3.Cluster) error {
	po := protocolOptions{maxConc: DefaultMaxConcurrentStreams}
	for k := range cfg.GetTypedExtensionProtocolOptions() {
		if k != HTTPProtocolOptionsName {
			return fmt.Errorf("typed_extension_protocol_options[%q]: extension not supported by outrider", k)
		}
	}
	if a := cfg.GetTypedExtensionProtocolOptions()[HTTPProtocolOptionsName]; a != nil {
		const base = "typed_extension_protocol_options[\"" + HTTPProtocolOptionsName + "\"]"
		p := &httpv3.HttpProtocolOptions{}
		if err := a.UnmarshalTo(p); err != nil {
			return fmt.Errorf("%s: %w", base, err)
		}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%s: %w", base, err)
		}
		if err := confcheck.Fields(p, base, "common_http_protocol_options", "explicit_http_config",
			"use_downstream_protocol_config", "auto_config", "upstream_http_protocol_options"); err != nil {
			return err
		}
		if err := c.compileAutoSNI(p.GetUpstreamHttpProtocolOptions(), base+".upstream_http_protocol_options"); err != nil {
			return err
		}
		if hpo := p.GetCommonHttpProtocolOptions(); hpo != nil {
			if err := confcheck.Fields(hpo, base+".common_http_protocol_options", "idle_timeout", "max_requests_per_connection",
				"max_connection_duration", "max_headers_count", "max_response_headers_kb"); err != nil {
				return err
			}
			c.applyCommonHTTP(hpo)
		}
		switch {
		case p.GetExplicitHttpConfig() != nil:
			e := p.GetExplicitHttpConfig()
			path := base + ".explicit_http_config"
			switch {
			case e.GetHttp2ProtocolOptions() != nil:
				po.proto = ProtocolHTTP2
				if err := po.setH2(e.GetHttp2ProtocolOptions(), path+".http2_protocol_options"); err != nil {
					return err
				}
			case e.GetHttp3ProtocolOptions() != nil:
				return fmt.Errorf("%s.http3_protocol_options: upstream HTTP/3 is not supported by outrider", path)
			default:
				if err := checkH1(e.GetHttpProtocolOptions(), path+".http_protocol_options"); err != nil {
					return err
				}
			}
		case p.GetUseDownstreamProtocolConfig() != nil:
			d := p.GetUseDownstreamProtocolConfig()
			path := base + ".use_downstream_protocol_config"
			if d.GetHttp3ProtocolOptions() != nil {
				return fmt.Errorf("%s.http3_protocol_options: upstream HTTP/3 is not supported by outrider", path)
			}
			po.proto, po.h1, po.h2 = ProtocolDownstream, d.GetHttpProtocolOptions() != nil, d.GetHttp2ProtocolOptions() != nil
			if err := checkH1(d.GetHttpProtocolOptions(), path+".http_protocol_options"); err != nil {
				return err
			}
			if po.h2 {
				if err := po.setH2(d.GetHttp2ProtocolOptions(), path+".http2_protocol_options"); err != nil {
					return err
				}
			}
		case p.GetAutoConfig() != nil:
			a := p.GetAutoConfig()
			path := base + ".auto_config"
			if err := confcheck.Fields(a, path, "http_protocol_options", "http2_protocol_options"); err != nil {
				return err
			}
			po.proto = ProtocolAuto
			if err := checkH1(a.GetHttpProtocolOptions(), path+".http_protocol_options"); err != nil {
				return err
			}
			if h2 := a.GetHttp2ProtocolOptions(); h2 != nil {
				if err := po.setH2(h2, path+".http2_protocol_options"); err != nil {
					return err
				}
			}
		}
	} else if err := c.compileAutoSNI(cfg.GetUpstreamHttpProtocolOptions(), "upstream_http_protocol_options"); err != nil {
		return err
	} else if h2 := cfg.GetHttp2ProtocolOptions(); h2 != nil {
		po.proto = ProtocolHTTP2
		if err := po.setH2(h2, "http2_protocol_options"); err != nil {
			return err
		}
	} else if err := checkH1(cfg.GetHttpProtocolOptions(), "http_protocol_options"); err != nil {
		return err
	}
	c.protocol = po
	return nil
}

// Protocol is the cluster's configured protocol selection.
func (c *Cluster) Protocol() Protocol { return c.protocol.proto }

// UseHTTP2 reports whether a request arriving over HTTP/2 (downstreamH2) or
// HTTP/1 goes upstream as HTTP/2. Auto clusters answer true over TLS: the
// HTTP/2 pool negotiates by ALPN and reports an HTTP/1.1 peer with
// ErrNoH2, after which the host uses HTTP/1.1.
func (c *Cluster) UseHTTP2(downstreamH2 bool, h *Host) bool {
	switch c.protocol.proto {
	case ProtocolHTTP2:
		return true
	case ProtocolDownstream:
		return downstreamH2 // as Envoy: the downstream's version
	case ProtocolAuto:
		return c.UsesTLS(h) && !h.flags.load(fH1Only)
	}
	return false
}

// UsesTLS reports whether connections to h use a transport socket, without
// counting a transport_socket_matches resolution.
func (c *Cluster) UsesTLS(h *Host) bool {
	if len(c.x.socketMatches) == 0 {
		return transport.IsTLS(c.transport)
	}
	var md map[string]*structpb.Value
	if h != nil {
		md = h.Metadata.GetFilterMetadata()[transportMatchKey].GetFields()
	}
	for i := range c.x.socketMatches {
		if matchesFields(c.x.socketMatches[i].fields, md) {
			return transport.IsTLS(c.x.socketMatches[i].transport)
		}
	}
	return transport.IsTLS(c.transport)
}

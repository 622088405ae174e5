package grpclog

import (
	"net/netip"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// httpEntry copies what ctx describes into a new entry (ctx is reused after Log returns).
func (l *Logger) httpEntry(ctx *formatter.Context) *alsdatav3.HTTPAccessLogEntry {
	e := &alsdatav3.HTTPAccessLogEntry{CommonProperties: common(ctx)}
	s := ctx.Stream
	if s != nil {
		switch s.Protocol {
		case "HTTP/1.0":
			e.ProtocolVersion = alsdatav3.HTTPAccessLogEntry_HTTP10
		case "HTTP/1.1":
			e.ProtocolVersion = alsdatav3.HTTPAccessLogEntry_HTTP11
		case "HTTP/2":
			e.ProtocolVersion = alsdatav3.HTTPAccessLogEntry_HTTP2
		case "HTTP/3":
			e.ProtocolVersion = alsdatav3.HTTPAccessLogEntry_HTTP3
		}
	}
	req := &alsdatav3.HTTPRequestProperties{}
	if h := ctx.Request; h != nil {
		if m, ok := corev3.RequestMethod_value[h.GetString(":method")]; ok {
			req.RequestMethod = corev3.RequestMethod(m)
		}
		req.Scheme = h.GetString(":scheme")
		req.Authority = h.GetString(":authority")
		req.Path = h.GetString(":path")
		req.UserAgent = h.GetString("user-agent")
		req.Referer = h.GetString("referer")
		req.ForwardedFor = h.GetString("x-forwarded-for")
		req.RequestId = h.GetString("x-request-id")
		req.OriginalPath = h.GetString("x-envoy-original-path")
		req.RequestHeadersBytes = uint64(h.ByteSize())
		req.RequestHeaders = pick(h, l.reqHeaders)
	}
	if s != nil {
		if req.RequestId == "" {
			req.RequestId = s.RequestID
		}
		req.RequestBodyBytes = s.BytesReceived
	}
	e.Request = req
	resp := &alsdatav3.HTTPResponseProperties{}
	if s != nil {
		if s.ResponseCode != 0 {
			resp.ResponseCode = wrapperspb.UInt32(uint32(s.ResponseCode))
		}
		resp.ResponseBodyBytes = s.BytesSent
		resp.ResponseCodeDetails = s.ResponseCodeDetails
	}
	if h := ctx.Response; h != nil {
		resp.ResponseHeadersBytes = uint64(h.ByteSize())
		resp.ResponseHeaders = pick(h, l.respHeaders)
	}
	if h := ctx.Trailers; h != nil {
		resp.ResponseTrailers = pick(h, l.respTrailers)
	}
	e.Response = resp
	return e
}

func tcpEntry(ctx *formatter.Context) *alsdatav3.TCPAccessLogEntry {
	e := &alsdatav3.TCPAccessLogEntry{CommonProperties: common(ctx)}
	if s := ctx.Stream; s != nil {
		e.ConnectionProperties = &alsdatav3.ConnectionProperties{ReceivedBytes: s.BytesReceived, SentBytes: s.BytesSent}
	}
	return e
}

// common fills the properties both entry kinds share.
func common(ctx *formatter.Context) *alsdatav3.AccessLogCommon {
	c := &alsdatav3.AccessLogCommon{SampleRate: 1, AccessLogType: ctx.LogType}
	s := ctx.Stream
	if s == nil {
		return c
	}
	if conn := s.Conn; conn != nil {
		c.DownstreamRemoteAddress = addr(conn.RemoteAddr)
		c.DownstreamDirectRemoteAddress = addr(conn.DirectRemoteAddr)
		c.DownstreamLocalAddress = addr(conn.LocalAddr)
		if t := conn.TLS; t != nil {
			c.TlsProperties = &alsdatav3.TLSProperties{TlsSniHostname: t.ServerName}
		}
	}
	if !s.StartTime.IsZero() {
		c.StartTime = timestamppb.New(s.StartTime)
	}
	c.TimeToLastRxByte = dur(s.LastDownstreamRxByte)
	c.TimeToFirstUpstreamTxByte = dur(s.FirstUpstreamTxByte)
	c.TimeToLastUpstreamTxByte = dur(s.LastUpstreamTxByte)
	c.TimeToFirstUpstreamRxByte = dur(s.FirstUpstreamRxByte)
	c.TimeToLastUpstreamRxByte = dur(s.LastUpstreamRxByte)
	c.TimeToFirstDownstreamTxByte = dur(s.FirstDownstreamTxByte)
	c.TimeToLastDownstreamTxByte = dur(s.LastDownstreamTxByte)
	c.UpstreamCluster = s.UpstreamCluster
	c.RouteName = s.RouteName
	c.UpstreamTransportFailureReason = s.UpstreamTransportFailureReason
	if s.UpstreamHost.IsValid() {
		c.UpstreamRemoteAddress = addr(s.UpstreamHost)
	}
	if ap, err := netip.ParseAddrPort(s.UpstreamLocalAddr); err == nil {
		c.UpstreamLocalAddress = addr(ap)
	}
	if s.Flags != 0 {
		c.ResponseFlags = flags(s.Flags)
	}
	return c
}

func dur(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func addr(ap netip.AddrPort) *corev3.Address {
	if !ap.IsValid() {
		return nil
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ap.Addr().Unmap().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
	}}}
}

// pick copies the named headers (lower case) that h has; several values join with ",".
func pick(h *headers.Map, names []string) map[string]string {
	if len(names) == 0 {
		return nil
	}
	var out map[string]string
	for _, n := range names {
		var v []byte
		found := false
		h.Values(n, func(b []byte) bool {
			if found {
				v = append(v, ',')
			}
			v = append(v, b...)
			found = true
			return true
		})
		if found {
			if out == nil {
				out = map[string]string{}
			}
			out[n] = string(v)
		}
	}
	return out
}

func flags(f streaminfo.ResponseFlag) *alsdatav3.ResponseFlags {
	r := &alsdatav3.ResponseFlags{
		FailedLocalHealthcheck:           f&streaminfo.FailedLocalHealthCheck != 0,
		NoHealthyUpstream:                f&streaminfo.NoHealthyUpstream != 0,
		UpstreamRequestTimeout:           f&streaminfo.UpstreamRequestTimeout != 0,
		LocalReset:                       f&streaminfo.LocalReset != 0,
		UpstreamRemoteReset:              f&streaminfo.UpstreamRemoteReset != 0,
		UpstreamConnectionFailure:        f&streaminfo.UpstreamConnectionFailure != 0,
		UpstreamConnectionTermination:    f&streaminfo.UpstreamConnectionTermination != 0,
		UpstreamOverflow:                 f&streaminfo.UpstreamOverflow != 0,
		NoRouteFound:                     f&streaminfo.NoRouteFound != 0,
		DelayInjected:                    f&streaminfo.DelayInjected != 0,
		FaultInjected:                    f&streaminfo.FaultInjected != 0,
		RateLimited:                      f&streaminfo.RateLimited != 0,
		RateLimitServiceError:            f&streaminfo.RateLimitServiceError != 0,
		DownstreamConnectionTermination:  f&streaminfo.DownstreamConnectionTermination != 0,
		UpstreamRetryLimitExceeded:       f&streaminfo.UpstreamRetryLimitExceeded != 0,
		StreamIdleTimeout:                f&streaminfo.StreamIdleTimeout != 0,
		InvalidEnvoyRequestHeaders:       f&streaminfo.InvalidEnvoyRequestHeaders != 0,
		DownstreamProtocolError:          f&streaminfo.DownstreamProtocolError != 0,
		UpstreamMaxStreamDurationReached: f&streaminfo.UpstreamMaxStreamDurationReached != 0,
		ResponseFromCacheFilter:          f&streaminfo.ResponseFromCacheFilter != 0,
		NoFilterConfigFound:              f&streaminfo.NoFilterConfigFound != 0,
		DurationTimeout:                  f&streaminfo.DurationTimeout != 0,
		UpstreamProtocolError:            f&streaminfo.UpstreamProtocolError != 0,
		NoClusterFound:                   f&streaminfo.NoClusterFound != 0,
		OverloadManager:                  f&streaminfo.OverloadManager != 0,
		DnsResolutionFailure:             f&streaminfo.DnsResolutionFailed != 0,
		DownstreamRemoteReset:            f&streaminfo.DownstreamRemoteReset != 0,
	}
	if f&streaminfo.UnauthorizedExternalService != 0 {
		r.UnauthorizedDetails = &alsdatav3.ResponseFlags_Unauthorized{Reason: alsdatav3.ResponseFlags_Unauthorized_EXTERNAL_SERVICE}
	}
	return r
}

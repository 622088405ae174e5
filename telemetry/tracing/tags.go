package tracing

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// Envoy's tag names (Tracing::Tags).
const (
	TagComponent           = "component"
	TagNodeID              = "node_id"
	TagZone                = "zone"
	TagGUIDRequestID       = "guid:x-request-id"
	TagGUIDClientTraceID   = "guid:x-client-trace-id"
	TagHTTPURL             = "http.url"
	TagHTTPMethod          = "http.method"
	TagHTTPProtocol        = "http.protocol"
	TagHTTPStatusCode      = "http.status_code"
	TagDownstreamCluster   = "downstream_cluster"
	TagUserAgent           = "user_agent"
	TagRequestSize         = "request_size"
	TagResponseSize        = "response_size"
	TagResponseFlags       = "response_flags"
	TagUpstreamCluster     = "upstream_cluster"
	TagUpstreamClusterName = "upstream_cluster.name"
	TagUpstreamAddress     = "upstream_address"
	TagPeerAddress         = "peer.address"
	TagError               = "error"
	TagGRPCStatusCode      = "grpc.status_code"
	TagGRPCMessage         = "grpc.message"
	TagGRPCPath            = "grpc.path"
	TagGRPCAuthority       = "grpc.authority"
	TagGRPCContentType     = "grpc.content_type"
	TagGRPCTimeout         = "grpc.timeout"
)

// DefaultMaxPathTagLength is Envoy's max_path_tag_length default.
const DefaultMaxPathTagLength = 256

// CustomTag is a compiled custom_tags entry: literal, environment or
// request_header.
type CustomTag struct {
	Name string
	// literal value, or the default for environment and request_header
	value  string
	header string // request_header name; empty otherwise
}

// CompileCustomTags compiles custom_tags. Environment values are read once,
// as Envoy reads them at config load.
func CompileCustomTags(tags []*tracingv3.CustomTag) ([]CustomTag, error) {
	out := make([]CustomTag, 0, len(tags))
	for i, t := range tags {
		if t.GetTag() == "" {
			return nil, fmt.Errorf("custom_tags[%d].tag: required", i)
		}
		ct := CustomTag{Name: t.GetTag()}
		switch {
		case t.GetLiteral() != nil:
			ct.value = t.GetLiteral().GetValue()
		case t.GetEnvironment() != nil:
			ct.value = t.GetEnvironment().GetDefaultValue()
			if v, ok := os.LookupEnv(t.GetEnvironment().GetName()); ok {
				ct.value = v
			}
		case t.GetRequestHeader() != nil:
			ct.header = strings.ToLower(t.GetRequestHeader().GetName())
			ct.value = t.GetRequestHeader().GetDefaultValue()
		case t.GetMetadata() != nil:
			return nil, fmt.Errorf("custom_tags[%d] (%s).metadata: not supported by outrider yet", i, t.GetTag())
		case t.GetValue() != "":
			return nil, fmt.Errorf("custom_tags[%d] (%s).value: not supported by outrider yet", i, t.GetTag())
		default:
			return nil, errors.New("custom_tags[" + strconv.Itoa(i) + "]: one of literal, environment or request_header is required")
		}
		out = append(out, ct)
	}
	return out, nil
}

// apply sets the tag on span; a request_header tag without the header and
// without a default is not set, as Envoy's.
func (t *CustomTag) apply(span Span, req *headers.Map) {
	if t.header != "" && req != nil {
		if v, ok := req.Get(t.header); ok {
			span.SetTag(t.Name, string(v))
			return
		}
	}
	if t.value != "" || t.header == "" {
		span.SetTag(t.Name, t.value)
	}
}

// TagConfig is what the tag functions need from the connection manager's
// tracing config.
type TagConfig struct {
	MaxPathTagLength int // 0 is DefaultMaxPathTagLength
	CustomTags       []CustomTag
	Verbose          bool // log the stream's timing events on the spans
}

// BuildURL is Envoy's http.url tag: scheme://host path, the path (the
// original one when a route rewrote it) cut to maxPath bytes.
func BuildURL(req *headers.Map, maxPath int) string {
	if maxPath <= 0 {
		maxPath = DefaultMaxPathTagLength
	}
	path, ok := req.Get("x-envoy-original-path")
	if !ok {
		path, _ = req.Get(headers.Path)
	}
	if len(path) > maxPath {
		path = path[:maxPath]
	}
	scheme, _ := req.Get(headers.Scheme)
	host, _ := req.Get(headers.Authority)
	return string(scheme) + "://" + string(host) + string(path)
}

func orDash(h *headers.Map, name string) string {
	if h == nil {
		return "-"
	}
	if v, ok := h.Get(name); ok {
		return string(v)
	}
	return "-"
}

// FinalizeDownstream sets the downstream span's tags from the finished
// stream and finishes it (HttpTracerUtility::finalizeDownstreamSpan).
func FinalizeDownstream(span Span, cfg *TagConfig, req, resp, trailers *headers.Map, info *streaminfo.Stream, end time.Time) {
	if req != nil {
		if v, ok := req.Get("x-request-id"); ok {
			span.SetTag(TagGUIDRequestID, string(v))
		}
		span.SetTag(TagHTTPURL, BuildURL(req, cfg.MaxPathTagLength))
		span.SetTag(TagHTTPMethod, req.GetString(headers.Method))
		span.SetTag(TagDownstreamCluster, orDash(req, "x-envoy-downstream-service-cluster"))
		span.SetTag(TagUserAgent, orDash(req, "user-agent"))
		span.SetTag(TagHTTPProtocol, protocol(info))
		if a := info.Conn; a != nil && a.DirectRemoteAddr.IsValid() {
			span.SetTag(TagPeerAddress, a.DirectRemoteAddr.Addr().Unmap().String())
		}
		if v, ok := req.Get("x-client-trace-id"); ok {
			span.SetTag(TagGUIDClientTraceID, string(v))
		}
		if ct, _ := req.Get("content-type"); headers.IsGRPC(ct) {
			span.SetTag(TagGRPCPath, req.GetString(headers.Path))
			span.SetTag(TagGRPCAuthority, req.GetString(headers.Authority))
			span.SetTag(TagGRPCContentType, string(ct))
			span.SetTag(TagGRPCTimeout, req.GetString("grpc-timeout"))
		}
	}
	span.SetTag(TagRequestSize, strconv.FormatUint(info.BytesReceived, 10))
	span.SetTag(TagResponseSize, strconv.FormatUint(info.BytesSent, 10))
	setCommonTags(span, cfg, req, info)
	grpcResponseTags(span, resp)
	grpcResponseTags(span, trailers)
	span.Finish(end)
}

// FinalizeUpstream sets an upstream (router child) span's tags and
// finishes it (HttpTracerUtility::finalizeUpstreamSpan).
func FinalizeUpstream(span Span, cfg *TagConfig, req *headers.Map, info *streaminfo.Stream, end time.Time) {
	span.SetTag(TagHTTPProtocol, protocol(info))
	if info.UpstreamHost.IsValid() {
		host := info.UpstreamHost.String()
		span.SetTag(TagUpstreamAddress, host)
		span.SetTag(TagPeerAddress, host)
	}
	setCommonTags(span, cfg, req, info)
	span.Finish(end)
}

func protocol(info *streaminfo.Stream) string {
	if info.Protocol == "" {
		return "-"
	}
	return info.Protocol
}

func setCommonTags(span Span, cfg *TagConfig, req *headers.Map, info *streaminfo.Stream) {
	span.SetTag(TagComponent, "proxy")
	if info.UpstreamCluster != "" {
		span.SetTag(TagUpstreamCluster, info.UpstreamCluster)
		span.SetTag(TagUpstreamClusterName, info.UpstreamCluster)
	}
	span.SetTag(TagHTTPStatusCode, strconv.Itoa(info.ResponseCode))
	span.SetTag(TagResponseFlags, info.Flags.String())
	if cfg.Verbose {
		annotateVerbose(span, info)
	}
	if info.ResponseCode == 0 || info.ResponseCode >= 500 {
		span.SetTag(TagError, "true")
	}
	for i := range cfg.CustomTags {
		cfg.CustomTags[i].apply(span, req)
	}
}

// Envoy's verbose span logs (Tracing::Logs).
const (
	LogLastDownstreamRxByteReceived = "last_downstream_rx_byte_received"
	LogFirstUpstreamTxByteSent      = "first_upstream_tx_byte_sent"
	LogLastUpstreamTxByteSent       = "last_upstream_tx_byte_sent"
	LogFirstUpstreamRxByteReceived  = "first_upstream_rx_byte_received"
	LogLastUpstreamRxByteReceived   = "last_upstream_rx_byte_received"
	LogFirstDownstreamTxByteSent    = "first_downstream_tx_byte_sent"
	LogLastDownstreamTxByteSent     = "last_downstream_tx_byte_sent"
)

// annotateVerbose logs the stream's timing events that happened.
func annotateVerbose(span Span, info *streaminfo.Stream) {
	for _, e := range [...]struct {
		at   time.Duration
		name string
	}{
		{info.LastDownstreamRxByte, LogLastDownstreamRxByteReceived},
		{info.FirstUpstreamTxByte, LogFirstUpstreamTxByteSent},
		{info.LastUpstreamTxByte, LogLastUpstreamTxByteSent},
		{info.FirstUpstreamRxByte, LogFirstUpstreamRxByteReceived},
		{info.LastUpstreamRxByte, LogLastUpstreamRxByteReceived},
		{info.FirstDownstreamTxByte, LogFirstDownstreamTxByteSent},
		{info.LastDownstreamTxByte, LogLastDownstreamTxByteSent},
	} {
		if e.at != 0 {
			span.Log(info.StartTime.Add(e.at), e.name)
		}
	}
}

// grpcResponseTags adds grpc.status_code and grpc.message from headers or
// trailers that carry grpc-status, and error=true for a status other than OK.
func grpcResponseTags(span Span, h *headers.Map) {
	if h == nil {
		return
	}
	v, ok := h.Get("grpc-status")
	if !ok {
		return
	}
	span.SetTag(TagGRPCStatusCode, string(v))
	if m, ok := h.Get("grpc-message"); ok {
		span.SetTag(TagGRPCMessage, string(m))
	}
	if string(v) != "0" {
		span.SetTag(TagError, "true")
	}
}

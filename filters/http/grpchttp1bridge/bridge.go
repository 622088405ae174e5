// Package grpchttp1bridge is Envoy's gRPC HTTP/1.1 bridge filter
// (envoy.filters.http.grpc_http1_bridge): an HTTP/1.x gRPC request goes on as
// is, and its response is buffered until the trailers, whose grpc-status and
// grpc-message become response headers (status 503 unless grpc-status is 0)
// with a content-length. With upgrade_protobuf_to_grpc an
// application/x-protobuf request is framed as gRPC and its response unframed.
package grpchttp1bridge

import (
	"bytes"
	"encoding/binary"
	"strconv"

	bridgev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_http1_bridge/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
)

// Name is the filter's Envoy name.
const Name = "envoy.filters.http.grpc_http1_bridge"

func init() {
	httpfilter.Registry.Register(Name, []string{"envoy.extensions.filters.http.grpc_http1_bridge.v3.Config"},
		httpfilter.Factory{Create: create})
}

// config is the compiled filter, shared by every stream of the chain.
type config struct {
	upgradeProtobuf bool // upgrade_protobuf_to_grpc
	ignoreQuery     bool // ignore_query_parameters
}

func create(_ *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
	m := &bridgev3.Config{}
	if err := httpfilter.UnmarshalConfig(a, m); err != nil {
		return nil, err
	}
	if err := confcheck.Fields(m, "", "upgrade_protobuf_to_grpc", "ignore_query_parameters"); err != nil {
		return nil, err
	}
	return &config{upgradeProtobuf: m.GetUpgradeProtobufToGrpc(), ignoreQuery: m.GetIgnoreQueryParameters()}, nil
}

func (c *config) New(cb httpfilter.Callbacks) any { return &filter{cfg: c, cb: cb} }

// frameHeaderLen is the gRPC message prefix: a compression flag and a
// big-endian length.
const frameHeaderLen = 5

// filter is one stream's bridge state (Envoy's Http1BridgeFilter).
type filter struct {
	cfg *config
	cb  httpfilter.Callbacks
	// bridging: an HTTP/1.x gRPC request, whose response is buffered and
	// rewritten. framing: a protobuf request upgraded to gRPC; the request
	// body gets the frame prefix, the response's first piece loses it.
	bridging, framing bool
	decHolding        bool         // the request body is being buffered
	resp              *headers.Map // the held response headers
	// framed is the request body with its prefix when it came in one
	// piece (passed on through Rewritten); ok until then.
	framed   []byte
	framedOK bool
}

// Reset lets the connection manager reuse the filter.
func (f *filter) Reset() {
	f.bridging, f.framing, f.decHolding, f.resp = false, false, false, nil
	f.framed, f.framedOK = f.framed[:0], false
}

// isGRPC is Envoy's Grpc::Common::hasGrpcContentType: application/grpc,
// alone or followed by "+" (application/grpc-web is not gRPC).
func isGRPC(ct []byte) bool {
	const g = "application/grpc"
	return bytes.HasPrefix(ct, []byte(g)) && (len(ct) == len(g) || ct[len(g)] == '+')
}

// DecodeHeaders is Http1BridgeFilter::decodeHeaders.
func (f *filter) DecodeHeaders(h *headers.Map, _ bool) httpfilter.Status {
	hasPath := h.Has(headers.Path)
	ct, _ := h.Get("content-type")
	if f.cfg.upgradeProtobuf && hasPath && string(ct) == "application/x-protobuf" {
		f.framing = true
		h.Set("content-type", "application/grpc")
		h.Del("content-length") // the message length is part of the gRPC frame
		f.cb.ClearRouteCache()
		ct, _ = h.Get("content-type")
	}
	if hasPath && isGRPC(ct) && f.cb.Info().Protocol != "HTTP/2" && f.cb.Info().Protocol != "HTTP/3" {
		f.bridging = true
	}
	if f.bridging && f.cfg.ignoreQuery {
		if p, _ := h.Get(headers.Path); bytes.IndexByte(p, '?') >= 0 {
			h.SetBytes(headers.Path, append([]byte(nil), p[:bytes.IndexByte(p, '?')]...))
		}
	}
	return httpfilter.Continue
}

// DecodeData is Http1BridgeFilter::decodeData: an upgraded protobuf body is
// buffered whole and gets the gRPC frame prefix at its end.
func (f *filter) DecodeData(p []byte, end bool) httpfilter.Status {
	if !f.bridging || !f.framing {
		return httpfilter.Continue
	}
	if !end {
		f.decHolding = true
		return httpfilter.StopAndBuffer
	}
	if f.decHolding {
		f.decHolding = false
		buf := f.cb.DecodingBuffer()
		*buf = prependFrame(*buf)
		return httpfilter.Continue
	}
	f.framed = appendFrame(f.framed[:0], len(p))
	f.framed = append(f.framed, p...)
	f.framedOK = true
	return httpfilter.Continue
}

// appendFrame appends the uncompressed gRPC frame prefix of a message of n
// bytes.
func appendFrame(b []byte, n int) []byte {
	b = append(b, 0)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// prependFrame puts the frame prefix in front of the message b.
func prependFrame(b []byte) []byte {
	n := len(b)
	b = append(b, make([]byte, frameHeaderLen)...)
	copy(b[frameHeaderLen:], b[:n])
	appendFrame(b[:0], n)
	return b
}

// Rewritten implements httpfilter.DataRewriter: the framed request body
// that came in one piece.
func (f *filter) Rewritten(encode bool) ([]byte, bool) {
	if encode || !f.framedOK {
		return nil, false
	}
	f.framedOK = false
	return f.framed, true
}

func (f *filter) DecodeTrailers(*headers.Map) httpfilter.Status { return httpfilter.Continue }

// EncodeHeaders is Http1BridgeFilter::encodeHeaders: a bridged response is
// held until its trailers (a headers-only response goes on as it is).
func (f *filter) EncodeHeaders(h *headers.Map, end bool) httpfilter.Status {
	if !f.bridging || end {
		return httpfilter.Continue
	}
	f.resp = h
	return httpfilter.Stop
}

// EncodeData is Http1BridgeFilter::encodeData: the body is buffered; an
// upgraded protobuf response loses the frame prefix of its first piece.
func (f *filter) EncodeData(p []byte, end bool) httpfilter.Status {
	if !f.bridging || end {
		return httpfilter.Continue
	}
	if f.framing {
		f.framing = false
		buf := f.cb.EncodingBuffer()
		off := len(*buf) - len(p) // the piece was added to the buffer before this call
		n := min(frameHeaderLen, len(p))
		*buf = append((*buf)[:off], (*buf)[off+n:]...)
	}
	return httpfilter.StopAndBuffer
}

// EncodeTrailers is Http1BridgeFilter::encodeTrailers: grpc-status other
// than 0 (or not a number) makes the status 503; grpc-status and
// grpc-message are copied into the headers, and content-length is the
// buffered body's. The HTTP/1 codec drops the trailers of a response with
// a content-length.
func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	if !f.bridging || f.resp == nil {
		return httpfilter.Continue
	}
	if gs, ok := t.Get("grpc-status"); ok {
		if code, err := strconv.ParseUint(string(gs), 10, 64); err != nil || code != 0 {
			f.resp.SetInt(headers.Status, 503)
		}
		f.resp.SetBytes("grpc-status", gs)
	}
	if gm, ok := t.Get("grpc-message"); ok {
		f.resp.SetBytes("grpc-message", gm)
	}
	n := 0
	if buf := f.cb.EncodingBuffer(); buf != nil {
		n = len(*buf)
	}
	f.resp.SetInt("content-length", int64(n))
	return httpfilter.Continue
}

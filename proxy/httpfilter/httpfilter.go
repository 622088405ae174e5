// Package httpfilter defines HTTP filters as Envoy's: each stream runs a chain
// of decoder filters over the request and encoder filters, in reverse order,
// over the response, ending in a terminal decoder (the router). A filter may
// block (it runs on the stream's own goroutine), stop the chain, buffer the
// body, or answer locally; its config is parsed once per filter chain.
package httpfilter

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/registry"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Status tells the connection manager what to do after a filter callback.
type Status uint8

const (
	// Continue passes the headers, data or trailers to the next filter.
	Continue Status = iota
	// Stop ends iteration for this callback: the filter answered (a local
	// reply), or it is the terminal filter and took the message over. Stopped
	// headers are held and passed on when a later data callback of the same
	// filter returns Continue.
	Stop
	// StopAndBuffer, from a data callback, holds the data: the manager buffers
	// it (up to the buffer limit, then 413 or 500 as Envoy) and passes all of it
	// on when the filter later returns Continue.
	StopAndBuffer
)

// DecoderFilter sees the request.
type DecoderFilter interface {
	DecodeHeaders(h *headers.Map, endStream bool) Status
	DecodeData(p []byte, endStream bool) Status
	DecodeTrailers(t *headers.Map) Status
}

// EncoderFilter sees the response, in reverse filter order.
type EncoderFilter interface {
	EncodeHeaders(h *headers.Map, endStream bool) Status
	EncodeData(p []byte, endStream bool) Status
	EncodeTrailers(t *headers.Map) Status
}

// DataRewriter is implemented by filters that transform each body piece as
// it passes instead of buffering the body (compression). After a data
// callback that returned Continue while the filter did not hold the stream,
// the connection manager passes on the piece Rewritten returns instead of the
// one the filter saw; after a trailers callback that returned Continue, it
// passes that piece on before the trailers. ok false leaves the piece as it
// was (and sends nothing before trailers). encode tells the direction; the
// slice is the filter's, valid until its next callback.
type DataRewriter interface {
	Rewritten(encode bool) (p []byte, ok bool)
}

// Resetter is implemented by filters that can be reused for the next stream
// of the same connection; others are made anew for each stream.
type Resetter interface {
	Reset()
}

// Callbacks is the stream as a filter sees it. Byte slices passed to a filter
// are valid only during the call: a filter that keeps data copies it.
type Callbacks interface {
	// Info is the stream's info (flags, route, upstream) for logs and stats.
	Info() *streaminfo.Stream
	// RequestHeaders are the (possibly modified) request headers.
	RequestHeaders() *headers.Map
	// Route is the route selected for the request headers; nil when none
	// matched. ClearRouteCache makes the next call select again.
	Route() *router.Route
	ClearRouteCache()
	// StreamIdleTimeout is how long the stream may see no bytes in either
	// direction (the route's idle_timeout, else the connection manager's
	// stream_idle_timeout); 0 means no limit. The terminal filter applies it
	// to its upstream reads.
	StreamIdleTimeout() time.Duration
	// SendLocalReply answers the request without an upstream: status, a
	// text body, Envoy's response code details, and a response flag (0 for
	// none). Filters return Stop after calling it.
	SendLocalReply(status int, body string, details string, flag streaminfo.ResponseFlag)
	// AddLocalReplyHeader adds a header to the next local reply of the
	// stream (such as x-envoy-overloaded).
	AddLocalReplyHeader(name, value string)
	// DecodingBuffer and EncodingBuffer are the body data held for a filter
	// that returned StopAndBuffer: while it holds the stream, each new piece
	// is appended before the filter sees it, so on its last call the buffer
	// is the whole body so far. The filter may rewrite it (and then fix
	// content-length in the headers it still holds).
	DecodingBuffer() *[]byte
	EncodingBuffer() *[]byte
	// Tunnel hands over the client side of a tunnel once its answer (an
	// upgrade's 101, a CONNECT's 2xx) was encoded: client bytes keep coming
	// through DecodeData, the filter writes upstream bytes to conn (the raw
	// HTTP/1 connection, or the HTTP/2 stream's DATA frames), half-closes it
	// with CloseWrite, and calls done at the end. conn may also have a
	// Done() <-chan struct{} method, closed when the stream has ended. nil
	// when the stream cannot tunnel.
	Tunnel() (conn net.Conn, done func())
	// ResponseHeaders is an empty map owned by the stream, for the terminal
	// filter to fill before EncodeHeaders.
	ResponseHeaders() *headers.Map
	// EncodeHeaders, EncodeData and EncodeTrailers send the response through
	// the encoder filters to the client. They report false when the client is
	// gone, so the caller stops.
	EncodeHeaders(h *headers.Map, endStream bool) bool
	EncodeData(p []byte, endStream bool) bool
	EncodeTrailers(t *headers.Map) bool
	// Flush sends what the codec holds; the terminal filter calls it before it
	// blocks on the upstream.
	Flush() bool
	// ResetStream abandons the stream: the client connection is closed (an
	// HTTP/1 response cannot be cut short otherwise).
	ResetStream(flag streaminfo.ResponseFlag)
	// ResponseStarted reports whether response headers went to the client.
	ResponseStarted() bool
	// BufferLimit is the connection's buffer limit in bytes.
	BufferLimit() int
}

// Context is what a factory gets: the proxy's shared, long-lived parts.
type Context struct {
	Clusters   *upstream.Manager
	Stats      *stats.Store
	StatPrefix string // the connection manager's "http.<stat_prefix>."
	Log        *slog.Logger
}

// Config is one filter's compiled, immutable config.
type Config interface {
	// New makes the filter for a stream. The result implements
	// DecoderFilter, EncoderFilter or both, and optionally Resetter.
	New(cb Callbacks) any
}

// Factory compiles a filter's typed_config once. Errors name the field.
type Factory struct {
	// Create parses cfg (nil when the filter has no typed_config).
	Create func(ctx *Context, cfg *anypb.Any) (Config, error)
	// Terminal filters end the chain (the router).
	Terminal bool
}

// Registry holds HTTP filters by Envoy name and config type URL.
var Registry = registry.New[Factory]("HTTP filter")

// StatsStore is where a filter's stats go: Stats, or a private store when
// it is nil (a filter compiled outside a server).
func (c *Context) StatsStore() *stats.Store {
	if c.Stats == nil {
		return stats.NewStore()
	}
	return c.Stats
}

// UnmarshalConfig unmarshals a filter's typed_config a into m; a nil a
// leaves m at its defaults. The error names typed_config.
func UnmarshalConfig(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return nil
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("typed_config: %w", err)
	}
	return nil
}

// Package httpinspector is Envoy's envoy.filters.listener.http_inspector: it
// peeks at a plaintext connection's first bytes and, when they are an HTTP/2
// connection preface or an HTTP/1 request line, sets the connection's
// application protocol to "h2c", "http/1.1" or "http/1.0" for
// filter_chain_match.application_protocols. The bytes it reads are replayed
// intact to whatever reads the connection next; a connection that
// tls_inspector found to be TLS is left alone.
package httpinspector

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"

	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/listenerfilter"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name.
const Name = "envoy.filters.listener.http_inspector"

// Envoy's buffer sizes: the first read asks for initialReadSize bytes, and a
// request line not ended within maxInspectSize bytes closes the connection.
const (
	initialReadSize = 8 << 10
	maxInspectSize  = 64 << 10
)

// The application protocols the filter sets, as Envoy's ALPN names.
const (
	HTTP10 = "http/1.0"
	HTTP11 = "http/1.1"
	H2C    = "h2c"
)

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

func init() {
	listenerfilter.Registry.Register(Name, []string{"envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"},
		func(cfg *anypb.Any, scope stats.Scope) (listenerfilter.Filter, error) {
			m := &httpinspectorv3.HttpInspector{}
			if cfg != nil {
				if err := cfg.UnmarshalTo(m); err != nil {
					return nil, fmt.Errorf("typed_config: %w", err)
				}
			}
			if err := confcheck.Fields(m, ""); err != nil {
				return nil, err
			}
			return New(NewStats(scope.Scope("http_inspector"))), nil
		})
}

// Stats are the http_inspector counters of a listener (scope
// "listener.<address>.http_inspector.").
type Stats struct {
	ReadError, HTTP10Found, HTTP11Found, HTTP2Found, HTTPNotFound *stats.Counter
}

// NewStats looks the counters up under scope.
func NewStats(scope stats.Scope) *Stats {
	return &Stats{
		ReadError:    scope.Counter("read_error"),
		HTTP10Found:  scope.Counter("http10_found"),
		HTTP11Found:  scope.Counter("http11_found"),
		HTTP2Found:   scope.Counter("http2_found"),
		HTTPNotFound: scope.Counter("http_not_found"),
	}
}

// Filter is a compiled http_inspector.
type Filter struct {
	stats *Stats
}

// New makes the filter; st may be nil (no stats).
func New(st *Stats) *Filter {
	if st == nil {
		st = &Stats{}
	}
	return &Filter{stats: st}
}

// ErrRequestLineTooLong closes a connection whose first line is not ended
// within 64 KiB, as Envoy does.
var ErrRequestLineTooLong = errors.New("http_inspector: no HTTP version within the inspect limit")

func inc(c *stats.Counter) {
	if c != nil {
		c.Inc()
	}
}

// Result is what Detect decides about a connection's first bytes.
type Result int

// Detect's results.
const (
	NeedMore Result = iota // not decided yet: read more
	NotHTTP                // neither an HTTP/2 preface nor an HTTP/1 request line
	FoundHTTP10
	FoundHTTP11
	FoundH2
)

// Detect classifies the first bytes of a connection as Envoy's
// http_inspector does: a (prefix of the) HTTP/2 connection preface, or an
// HTTP/1 request line "METHOD SP target SP HTTP/x.y" whose version 1.1 gives
// HTTP/1.1 and anything else HTTP/1.0.
func Detect(data []byte) Result {
	if len(data) == 0 {
		return NeedMore
	}
	n := min(len(data), len(h2Preface))
	if bytes.Equal(data[:n], h2Preface[:n]) {
		if len(data) < len(h2Preface) {
			return NeedMore
		}
		return FoundH2
	}
	if data[0] == '\r' || data[0] == '\n' {
		return NotHTTP
	}
	line := data
	complete := false
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		line, complete = data[:i], true
		line = bytes.TrimSuffix(line, []byte{'\r'})
	}
	// Method: a token up to the first space.
	sp := bytes.IndexByte(line, ' ')
	method := line
	if sp >= 0 {
		method = line[:sp]
	}
	for _, c := range method {
		if !isTchar(c) {
			return NotHTTP
		}
	}
	if sp < 0 {
		if complete {
			return NotHTTP
		}
		return NeedMore
	}
	if sp == 0 {
		return NotHTTP
	}
	if !complete {
		for _, c := range line[sp+1:] {
			if c < 0x21 && c != ' ' || c == 0x7f {
				return NotHTTP
			}
		}
		return NeedMore
	}
	rest := line[sp+1:]
	sp2 := bytes.LastIndexByte(rest, ' ')
	if sp2 <= 0 {
		return NotHTTP
	}
	target, version := rest[:sp2], rest[sp2+1:]
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return NotHTTP
		}
	}
	if len(version) != 8 || !bytes.HasPrefix(version, []byte("HTTP/")) || !isDigit(version[5]) ||
		version[6] != '.' || !isDigit(version[7]) {
		return NotHTTP
	}
	if version[5] == '1' && version[7] == '1' {
		return FoundHTTP11
	}
	return FoundHTTP10
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isTchar reports whether c may appear in an HTTP token (RFC 9110).
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// OnAccept implements listenerfilter.Filter. It reads until Detect decides,
// bounded by 64 KiB; the caller's deadline (listener_filters_timeout) bounds
// the time, and on a timeout the bytes read so far are still replayed.
func (f *Filter) OnAccept(conn *net.Conn, info *streaminfo.Conn) error {
	if tp := info.TransportProtocol; tp != "" && tp != "raw_buffer" {
		return nil // Envoy cannot inspect under a transport socket
	}
	buf := make([]byte, 0, initialReadSize)
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxInspectSize {
				inc(f.stats.ReadError)
				return ErrRequestLineTooLong
			}
			nb := make([]byte, len(buf), min(2*cap(buf), maxInspectSize))
			copy(nb, buf)
			buf = nb
		}
		n, err := (*conn).Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch Detect(buf) {
		case FoundH2:
			inc(f.stats.HTTP2Found)
			info.ALPN = []string{H2C}
		case FoundHTTP11:
			inc(f.stats.HTTP11Found)
			info.ALPN = []string{HTTP11}
		case FoundHTTP10:
			inc(f.stats.HTTP10Found)
			info.ALPN = []string{HTTP10}
		case NotHTTP:
			inc(f.stats.HTTPNotFound)
		case NeedMore:
			if err == nil {
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				*conn = listenerfilter.Replay(*conn, buf) // continue_on_listener_filters_timeout goes on with them
			}
			return fmt.Errorf("http_inspector: %w", err)
		}
		*conn = listenerfilter.Replay(*conn, buf)
		return nil
	}
}

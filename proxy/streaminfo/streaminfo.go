// Package streaminfo holds what the proxy learns about one downstream
// connection and one HTTP stream: addresses, timings, byte counts, the chosen
// route and upstream, and Envoy's response flags. Access logs, stats and the
// header formatter read it; one goroutine owns it at a time.
package streaminfo

import (
	"crypto/x509"
	"net/netip"
	"strings"
	"time"
)

// ResponseFlag is a bit set of Envoy's response flags.
type ResponseFlag uint32

// Envoy's response flags, in the order Envoy prints them.
const (
	FailedLocalHealthCheck ResponseFlag = 1 << iota
	NoHealthyUpstream
	UpstreamRequestTimeout
	LocalReset
	UpstreamRemoteReset
	UpstreamConnectionFailure
	UpstreamConnectionTermination
	UpstreamOverflow
	NoRouteFound
	DelayInjected
	FaultInjected
	RateLimited
	UnauthorizedExternalService
	RateLimitServiceError
	DownstreamConnectionTermination
	UpstreamRetryLimitExceeded
	StreamIdleTimeout
	InvalidEnvoyRequestHeaders
	DownstreamProtocolError
	UpstreamMaxStreamDurationReached
	ResponseFromCacheFilter
	NoFilterConfigFound
	DurationTimeout
	UpstreamProtocolError
	NoClusterFound
	OverloadManager
	DnsResolutionFailed
	DropOverLoad
	DownstreamRemoteReset
)

var flagNames = [...]string{
	"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
	"DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
}

// String is Envoy's %RESPONSE_FLAGS% form: short names joined by commas, or "-".
func (f ResponseFlag) String() string {
	if f == 0 {
		return "-"
	}
	var b strings.Builder
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(n)
		}
	}
	return b.String()
}

// Conn describes a downstream connection. It is filled by the listener and
// listener filters before the network filters run, then read-only.
type Conn struct {
	ID                  uint64
	LocalAddr           netip.AddrPort // address the connection was accepted on (or original destination)
	RemoteAddr          netip.AddrPort // peer address (or the one a listener filter such as proxy_protocol restored)
	DirectRemoteAddr    netip.AddrPort // the socket's own peer address
	RequestedServerName string         // SNI, set by tls_inspector or TLS
	TransportProtocol   string         // "raw_buffer" or "tls"
	ALPN                []string       // application protocols offered by the client
	StartTime           time.Time
	ListenerName        string
	FilterChainName     string
	// LocalAddrRestored tells that a listener filter (original_dst) set
	// LocalAddr to the connection's original destination; false means
	// LocalAddr is the socket's own local address.
	LocalAddrRestored bool
	// TLS describes the downstream TLS session; nil on plaintext.
	TLS *TLSInfo
	// FilterState holds connection-lifespan filter state, visible to every
	// stream of the connection (empty when no filter set any).
	FilterState FilterState
}

// TLSInfo is what a TLS transport learned in the handshake, for access
// logs, RBAC and forwarded client certificates.
type TLSInfo struct {
	Version, Cipher, ServerName, ALPN string
	Resumed                           bool
	PeerPresented                     bool
	PeerURISANs, PeerDNSSANs          []string
	PeerSubject, PeerIssuer           string
	PeerSerial, PeerFingerprintSHA256 string
	PeerValidFrom, PeerExpires        time.Time
	// PeerCertificates is the chain the peer sent, leaf first (nil when it
	// sent none); XFCC's Cert and Chain and %DOWNSTREAM_PEER_CERT% encode it.
	PeerCertificates []*x509.Certificate
	// LocalURISANs, LocalDNSSANs and LocalSubject describe the certificate
	// this side presented (XFCC's By, %DOWNSTREAM_LOCAL_URI_SAN%); empty
	// when it is not known (a resumed session with several certificates).
	LocalURISANs, LocalDNSSANs []string
	LocalSubject               string
}

// Stream describes one HTTP request/response exchange. It is reset and reused
// between requests on a connection; the owner goroutine of the stream writes it.
type Stream struct {
	Conn *Conn

	StartTime time.Time
	// Offsets from StartTime; zero means "did not happen".
	LastDownstreamRxByte  time.Duration
	FirstUpstreamTxByte   time.Duration
	LastUpstreamTxByte    time.Duration
	FirstUpstreamRxByte   time.Duration
	LastUpstreamRxByte    time.Duration
	FirstDownstreamTxByte time.Duration
	LastDownstreamTxByte  time.Duration

	Protocol            string // "HTTP/1.0", "HTTP/1.1", "HTTP/2"
	ResponseCode        int
	ResponseCodeDetails string
	Flags               ResponseFlag
	BytesReceived       uint64
	BytesSent           uint64

	RouteName                      string
	VirtualHostName                string
	UpstreamCluster                string
	UpstreamHost                   netip.AddrPort // the chosen endpoint; zero: none (formatted when logged)
	UpstreamLocalAddr              string
	UpstreamTransportFailureReason string
	RequestID                      string

	// FilterState holds the stream's filter-state objects (empty when no
	// filter set any); FilterStateObject also looks in the connection's.
	FilterState FilterState
}

// Reset prepares s for the next stream on conn, keeping nothing else.
func (s *Stream) Reset(conn *Conn, now time.Time) {
	fs := s.FilterState
	fs.Clear()
	*s = Stream{Conn: conn, StartTime: now, FilterState: fs}
}

// SetFlag adds a response flag.
func (s *Stream) SetFlag(f ResponseFlag) { s.Flags |= f }

// Has reports whether flag f is set.
func (s *Stream) Has(f ResponseFlag) bool { return s.Flags&f != 0 }

// Since returns the offset of t from the stream's start.
func (s *Stream) Since(t time.Time) time.Duration { return t.Sub(s.StartTime) }

package tlsctx

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"time"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// PeerInfo is the identity and session of a TLS peer as the rest of the proxy
// (RBAC, XFCC, access log operators) sees it. Zero values mean "absent".
type PeerInfo struct {
	Presented          bool // the peer sent a certificate; the certificate fields below are empty otherwise
	URISANs            []string
	DNSSANs            []string
	IPSANs             []string
	EmailSANs          []string
	Subject            string // RFC 2253, as %DOWNSTREAM_PEER_SUBJECT%
	Issuer             string
	Serial             string // lower-case hex
	FingerprintSHA256  string // lower-case hex of the DER certificate
	FingerprintSHA1    string
	ValidFrom, Expires time.Time
	Version            string // "TLSv1.2", "TLSv1.3"
	Cipher             string // OpenSSL/BoringSSL name, e.g. "TLS_AES_128_GCM_SHA256"
	ALPN               string // negotiated application protocol
	ServerName         string // SNI
	Resumed            bool
	SessionID          string // always empty: crypto/tls does not expose session IDs
}

// PeerInfoFromState extracts the peer's identity from a completed handshake.
func PeerInfoFromState(cs tls.ConnectionState) PeerInfo {
	p := PeerInfo{
		Version:    VersionName(cs.Version),
		Cipher:     CipherName(cs.CipherSuite),
		ALPN:       cs.NegotiatedProtocol,
		ServerName: cs.ServerName,
		Resumed:    cs.DidResume,
	}
	if len(cs.PeerCertificates) == 0 {
		return p
	}
	c := cs.PeerCertificates[0]
	p.Presented = true
	p.DNSSANs = c.DNSNames
	p.EmailSANs = c.EmailAddresses
	for _, u := range c.URIs {
		p.URISANs = append(p.URISANs, u.String())
	}
	for _, ip := range c.IPAddresses {
		p.IPSANs = append(p.IPSANs, ip.String())
	}
	p.Subject = c.Subject.String()
	p.Issuer = c.Issuer.String()
	if c.SerialNumber != nil {
		s := c.SerialNumber.Text(16)
		if len(s)%2 == 1 {
			s = "0" + s
		}
		p.Serial = s
	}
	h := sha256.Sum256(c.Raw)
	p.FingerprintSHA256 = hex.EncodeToString(h[:])
	h1 := sha1.Sum(c.Raw)
	p.FingerprintSHA1 = hex.EncodeToString(h1[:])
	p.ValidFrom, p.Expires = c.NotBefore, c.NotAfter
	return p
}

// VersionName is Envoy's name of a TLS version ("TLSv1.3"), "" if unknown.
func VersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return ""
}

var cipherNames = func() map[uint16]string {
	m := map[uint16]string{
		tls.TLS_AES_128_GCM_SHA256:       "TLS_AES_128_GCM_SHA256",
		tls.TLS_AES_256_GCM_SHA384:       "TLS_AES_256_GCM_SHA384",
		tls.TLS_CHACHA20_POLY1305_SHA256: "TLS_CHACHA20_POLY1305_SHA256",
	}
	for n, id := range cipherByName {
		m[id] = n
	}
	return m
}()

// CipherName is the OpenSSL/BoringSSL name of a cipher suite, as Envoy
// reports it; Go's name when BoringSSL has none.
func CipherName(id uint16) string {
	if n, ok := cipherNames[id]; ok {
		return n
	}
	if id == 0 {
		return ""
	}
	return tls.CipherSuiteName(id)
}

// Stats are Envoy's ssl.* counters of a listener or cluster.
type Stats struct {
	scope              stats.Scope
	Handshake          *stats.Counter
	ConnectionError    *stats.Counter
	NoCertificate      *stats.Counter
	FailVerifyNoCert   *stats.Counter
	FailVerifyError    *stats.Counter
	FailVerifySAN      *stats.Counter
	FailVerifyCertHash *stats.Counter
	SessionReused      *stats.Counter
}

// NewStats looks the counters up under scope, which ends with "ssl."
// (e.g. "listener.0.0.0.0_443.ssl.", "cluster.x.ssl.").
func NewStats(scope stats.Scope) *Stats {
	return &Stats{
		scope:              scope,
		Handshake:          scope.Counter("handshake"),
		ConnectionError:    scope.Counter("connection_error"),
		NoCertificate:      scope.Counter("no_certificate"),
		FailVerifyNoCert:   scope.Counter(string(FailVerifyNoCert)),
		FailVerifyError:    scope.Counter(string(FailVerifyError)),
		FailVerifySAN:      scope.Counter(string(FailVerifySAN)),
		FailVerifyCertHash: scope.Counter(string(FailVerifyCertHash)),
		SessionReused:      scope.Counter("session_reused"),
	}
}

// Record counts the outcome of one handshake: err is what tls.Conn.Handshake
// returned and cs its connection state.
func (st *Stats) Record(cs tls.ConnectionState, err error) {
	if err != nil {
		st.ConnectionError.Inc()
		var ve *VerifyError
		if errors.As(err, &ve) {
			switch ve.Reason {
			case FailVerifyNoCert:
				st.FailVerifyNoCert.Inc()
			case FailVerifyError:
				st.FailVerifyError.Inc()
			case FailVerifySAN:
				st.FailVerifySAN.Inc()
			case FailVerifyCertHash:
				st.FailVerifyCertHash.Inc()
			}
		}
		return
	}
	st.Handshake.Inc()
	if cs.DidResume {
		st.SessionReused.Inc()
	}
	if len(cs.PeerCertificates) == 0 {
		st.NoCertificate.Inc()
	}
	if v := VersionName(cs.Version); v != "" {
		st.scope.Counter("versions." + v).Inc()
	}
	if c := CipherName(cs.CipherSuite); c != "" {
		st.scope.Counter("ciphers." + c).Inc()
	}
	if cs.CurveID != 0 {
		st.scope.Counter("curves." + curveName(cs.CurveID)).Inc()
	}
}

// curveName is BoringSSL's name of a curve ("P-256"), Go's when it has none.
func curveName(id tls.CurveID) string {
	switch id {
	case tls.CurveP256:
		return "P-256"
	case tls.CurveP384:
		return "P-384"
	case tls.CurveP521:
		return "P-521"
	}
	return id.String()
}

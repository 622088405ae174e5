package tlsctx

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
)

// params is the compiled form of tls_params.
type params struct {
	minVersion, maxVersion uint16
	ciphers                []uint16 // nil: Envoy's default list
	curves                 []tls.CurveID
}

// Envoy's default ECDH curves ("X25519:P-256").
var defaultCurves = []tls.CurveID{tls.X25519, tls.CurveP256}

// Envoy's default cipher suites (TLS 1.2 and below; TLS 1.3 suites are not configurable).
var defaultCiphers = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// cipherByName maps BoringSSL/OpenSSL cipher names (as Envoy's cipher_suites
// takes them) to Go's suite IDs.
var cipherByName = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
	"DES-CBC3-SHA":                  tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA,
}

// curveByName maps BoringSSL curve names to Go's curve IDs.
var curveByName = map[string]tls.CurveID{
	"X25519":         tls.X25519,
	"P-256":          tls.CurveP256,
	"prime256v1":     tls.CurveP256,
	"P-384":          tls.CurveP384,
	"secp384r1":      tls.CurveP384,
	"P-521":          tls.CurveP521,
	"secp521r1":      tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

// envoyVersion maps TlsParameters.TlsProtocol to Go's versions; TLS_AUTO (0) maps to def.
func envoyVersion(v tlsv3.TlsParameters_TlsProtocol, def uint16) (uint16, error) {
	switch v {
	case tlsv3.TlsParameters_TLS_AUTO:
		return def, nil
	case tlsv3.TlsParameters_TLSv1_0:
		return tls.VersionTLS10, nil
	case tlsv3.TlsParameters_TLSv1_1:
		return tls.VersionTLS11, nil
	case tlsv3.TlsParameters_TLSv1_2:
		return tls.VersionTLS12, nil
	case tlsv3.TlsParameters_TLSv1_3:
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("unknown TLS version %d", v)
}

// compileParams compiles tls_params. Envoy's defaults are TLS 1.2 to 1.3 for
// both servers and clients.
func compileParams(p *tlsv3.TlsParameters, path string) (params, error) {
	out := params{curves: defaultCurves, ciphers: defaultCiphers}
	if err := confcheck.Fields(p, path, "tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites", "ecdh_curves"); err != nil {
		return out, err
	}
	var err error
	if out.minVersion, err = envoyVersion(p.GetTlsMinimumProtocolVersion(), tls.VersionTLS12); err != nil {
		return out, fmt.Errorf("%s.tls_minimum_protocol_version: %w", path, err)
	}
	if out.maxVersion, err = envoyVersion(p.GetTlsMaximumProtocolVersion(), tls.VersionTLS13); err != nil {
		return out, fmt.Errorf("%s.tls_maximum_protocol_version: %w", path, err)
	}
	if out.minVersion > out.maxVersion {
		return out, fmt.Errorf("%s: tls_minimum_protocol_version is above tls_maximum_protocol_version", path)
	}
	if cs := p.GetCipherSuites(); len(cs) > 0 {
		out.ciphers = nil
		for i, entry := range cs {
			// BoringSSL's equal-preference groups "[A|B]" list several names.
			for _, name := range strings.Split(strings.Trim(entry, "[]"), "|") {
				id, ok := cipherByName[name]
				if !ok {
					return out, fmt.Errorf("%s.cipher_suites[%d]: unknown or unsupported cipher suite %q", path, i, name)
				}
				out.ciphers = append(out.ciphers, id)
			}
		}
	}
	if cv := p.GetEcdhCurves(); len(cv) > 0 {
		out.curves = nil
		for i, name := range cv {
			id, ok := curveByName[name]
			if !ok {
				return out, fmt.Errorf("%s.ecdh_curves[%d]: unknown or unsupported curve %q", path, i, name)
			}
			out.curves = append(out.curves, id)
		}
	}
	return out, nil
}

func (p params) apply(c *tls.Config) {
	c.MinVersion, c.MaxVersion = p.minVersion, p.maxVersion
	c.CipherSuites = p.ciphers
	c.CurvePreferences = p.curves
}

// loadCertificate compiles a TlsCertificate (PEM chain and key, inline or file).
func loadCertificate(tc *tlsv3.TlsCertificate, path string) (*tls.Certificate, error) {
	if err := confcheck.Fields(tc, path, "certificate_chain", "private_key"); err != nil {
		return nil, err
	}
	if tc.GetCertificateChain() == nil {
		return nil, fmt.Errorf("%s.certificate_chain: required", path)
	}
	if tc.GetPrivateKey() == nil {
		return nil, fmt.Errorf("%s.private_key: required", path)
	}
	chain, err := readDataSource(tc.GetCertificateChain(), path+".certificate_chain")
	if err != nil {
		return nil, err
	}
	key, err := readDataSource(tc.GetPrivateKey(), path+".private_key")
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s.certificate_chain: %w", path, err)
		}
	}
	return &c, nil
}

package tlsctx

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/registry"
)

// SPIFFEValidatorName is the Envoy name of the SPIFFE certificate validator.
const SPIFFEValidatorName = "envoy.tls.cert_validator.spiffe"

// spiffeValidator is Envoy's SPIFFE certificate validator: the peer's single
// SPIFFE ID URI SAN selects its trust domain's bundle, which alone may
// verify the chain.
type spiffeValidator struct {
	bundles *x509bundle.Set
}

func compileSPIFFE(tc *corev3.TypedExtensionConfig, path string) (*spiffeValidator, error) {
	cfg := &tlsv3.SPIFFECertValidatorConfig{}
	typ := registry.TrimTypeURL(tc.GetTypedConfig().GetTypeUrl())
	if typ != string(cfg.ProtoReflect().Descriptor().FullName()) {
		return nil, fmt.Errorf("%s: custom validator %q (config type %s) not supported by outrider yet", path, tc.GetName(), typ)
	}
	if err := tc.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		return nil, fmt.Errorf("%s.typed_config: %w", path, err)
	}
	path += ".typed_config"
	if err := confcheck.Fields(cfg, path, "trust_domains", "trust_bundles"); err != nil {
		return nil, err
	}
	sv := &spiffeValidator{bundles: x509bundle.NewSet()}
	if cfg.GetTrustBundles() != nil {
		// trust_bundles takes precedence over trust_domains.
		b, err := readDataSource(cfg.GetTrustBundles(), path+".trust_bundles")
		if err != nil {
			return nil, err
		}
		bundles, err := parseBundleMap(b)
		if err != nil {
			return nil, fmt.Errorf("%s.trust_bundles: %w", path, err)
		}
		for _, bd := range bundles {
			sv.bundles.Add(bd)
		}
		return sv, nil
	}
	if len(cfg.GetTrustDomains()) == 0 {
		return nil, fmt.Errorf("%s.trust_domains: at least one trust domain or trust_bundles is required", path)
	}
	for i, d := range cfg.GetTrustDomains() {
		p := fmt.Sprintf("%s.trust_domains[%d]", path, i)
		if err := confcheck.Fields(d, p, "name", "trust_bundle"); err != nil {
			return nil, err
		}
		td, err := spiffeid.TrustDomainFromString(d.GetName())
		if err != nil {
			return nil, fmt.Errorf("%s.name: %w", p, err)
		}
		if sv.bundles.Has(td) {
			return nil, fmt.Errorf("%s.name: duplicate trust domain %q", p, d.GetName())
		}
		certs, err := readCerts(d.GetTrustBundle(), p+".trust_bundle")
		if err != nil {
			return nil, err
		}
		sv.bundles.Add(x509bundle.FromX509Authorities(td, certs))
	}
	return sv, nil
}

// parseBundleMap reads a SPIFFE trust bundle map:
// {"trust_domains": {"td": {"keys": [{"use": "x509-svid", "x5c": ["<base64 DER>"]}]}}}.
func parseBundleMap(b []byte) ([]*x509bundle.Bundle, error) {
	var doc struct {
		TrustDomains map[string]struct {
			Keys []struct {
				Use string   `json:"use"`
				X5c []string `json:"x5c"`
			} `json:"keys"`
		} `json:"trust_domains"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if len(doc.TrustDomains) == 0 {
		return nil, fmt.Errorf("no trust_domains")
	}
	names := make([]string, 0, len(doc.TrustDomains))
	for n := range doc.TrustDomains {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*x509bundle.Bundle
	for _, n := range names {
		td, err := spiffeid.TrustDomainFromString(n)
		if err != nil {
			return nil, fmt.Errorf("trust domain %q: %w", n, err)
		}
		bd := x509bundle.New(td)
		for i, k := range doc.TrustDomains[n].Keys {
			if k.Use != "x509-svid" {
				continue
			}
			if len(k.X5c) != 1 {
				return nil, fmt.Errorf("trust domain %q: keys[%d]: x509-svid key must have exactly one x5c entry", n, i)
			}
			der, err := base64.StdEncoding.DecodeString(k.X5c[0])
			if err != nil {
				return nil, fmt.Errorf("trust domain %q: keys[%d].x5c: %w", n, i, err)
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("trust domain %q: keys[%d].x5c: %w", n, i, err)
			}
			bd.AddX509Authority(c)
		}
		if bd.Empty() {
			return nil, fmt.Errorf("trust domain %q: no x509-svid keys", n)
		}
		out = append(out, bd)
	}
	return out, nil
}

// verify checks an X.509-SVID chain (leaf first) against the bundle of the
// leaf's trust domain.
func (sv *spiffeValidator) verify(chain []*x509.Certificate, now time.Time, allowExpired bool) error {
	if allowExpired && now.After(chain[0].NotAfter) {
		now = chain[0].NotAfter.Add(-time.Second)
	}
	_, _, err := x509svid.Verify(chain, sv.bundles, x509svid.WithTime(now))
	return err
}

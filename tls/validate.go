package tlsctx

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
)

// Reason classifies a peer verification failure like Envoy's ssl.* stats.
type Reason string

// Verification failure reasons; each is the suffix of an Envoy ssl stat.
const (
	FailVerifyNoCert   Reason = "fail_verify_no_cert"
	FailVerifyError    Reason = "fail_verify_error"
	FailVerifySAN      Reason = "fail_verify_san"
	FailVerifyCertHash Reason = "fail_verify_cert_hash"
)

// VerifyError is returned (wrapped by crypto/tls) by a handshake that fails
// peer verification.
type VerifyError struct {
	Reason Reason
	Err    error
}

func (e *VerifyError) Error() string { return string(e.Reason) + ": " + e.Err.Error() }
func (e *VerifyError) Unwrap() error { return e.Err }

// validator is a compiled CertificateValidationContext. A nil *validator
// accepts every peer.
type validator struct {
	roots           *x509.CertPool      // nil: no chain verification (no trusted_ca)
	cas             []*x509.Certificate // trusted_ca's certificates, for /certs
	caPath          string              // trusted_ca's file name, "<inline>" when inline
	spiffe          *spiffeValidator
	sans            []sanMatcher
	spki, hashes    [][]byte
	crls            []*x509.RevocationList
	onlyLeafCRL     bool
	allowExpired    bool
	acceptUntrusted bool
	maxDepth        int // 0: unlimited
}

var validationFields = []string{
	"trusted_ca", "verify_certificate_spki", "verify_certificate_hash", "match_typed_subject_alt_names",
	"match_subject_alt_names", "crl", "allow_expired_certificate", "trust_chain_verification",
	"custom_validator_config", "only_verify_leaf_cert_crl", "max_verify_depth",
}

// compileValidation compiles a validation context; path names it in errors.
func compileValidation(vc *tlsv3.CertificateValidationContext, path string) (*validator, error) {
	if vc == nil {
		return nil, nil
	}
	if err := confcheck.Fields(vc, path, validationFields...); err != nil {
		return nil, err
	}
	v := &validator{
		allowExpired:    vc.GetAllowExpiredCertificate(),
		acceptUntrusted: vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED,
		onlyLeafCRL:     vc.GetOnlyVerifyLeafCertCrl(),
	}
	if d := vc.GetMaxVerifyDepth(); d != nil {
		v.maxDepth = int(d.GetValue())
	}
	if vc.GetTrustedCa() != nil {
		p := path + ".trusted_ca"
		certs, err := readCerts(vc.GetTrustedCa(), p)
		if err != nil {
			return nil, err
		}
		v.roots = x509.NewCertPool()
		v.cas, v.caPath = certs, sourcePath(vc.GetTrustedCa())
		for _, c := range certs {
			v.roots.AddCert(c)
		}
	}
	if cv := vc.GetCustomValidatorConfig(); cv != nil {
		if v.roots != nil {
			return nil, fmt.Errorf("%s: trusted_ca cannot be combined with custom_validator_config", path)
		}
		sv, err := compileSPIFFE(cv, path+".custom_validator_config")
		if err != nil {
			return nil, err
		}
		v.spiffe = sv
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		sm, err := compileSANMatcher(m, fmt.Sprintf("%s.match_typed_subject_alt_names[%d]", path, i))
		if err != nil {
			return nil, err
		}
		if v.spiffe != nil && sm.typ != tlsv3.SubjectAltNameMatcher_URI {
			continue // the SPIFFE validator matches URI SANs only
		}
		v.sans = append(v.sans, sm)
	}
	for i, m := range vc.GetMatchSubjectAltNames() {
		p := fmt.Sprintf("%s.match_subject_alt_names[%d]", path, i)
		str, err := compileStringMatcher(m, p)
		if err != nil {
			return nil, err
		}
		v.sans = append(v.sans, sanMatcher{typ: anySAN, m: str})
	}
	if len(v.sans) > 0 && v.roots == nil && v.spiffe == nil {
		return nil, fmt.Errorf("%s: SAN-based verification of peer certificates without trusted CA is insecure and not allowed", path)
	}
	for i, s := range vc.GetVerifyCertificateSpki() {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s.verify_certificate_spki[%d]: invalid base64-encoded SHA-256 %q", path, i, s)
		}
		v.spki = append(v.spki, b)
	}
	for i, s := range vc.GetVerifyCertificateHash() {
		b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s.verify_certificate_hash[%d]: invalid hex-encoded SHA-256 %q", path, i, s)
		}
		v.hashes = append(v.hashes, b)
	}
	if vc.GetCrl() != nil {
		if v.roots == nil {
			return nil, fmt.Errorf("%s.crl: requires trusted_ca", path)
		}
		crls, err := readCRLs(vc.GetCrl(), path+".crl")
		if err != nil {
			return nil, err
		}
		v.crls = crls
	}
	return v, nil
}

type dataSource = *corev3.DataSource

// readCerts parses every PEM certificate in a data source; none is an error.
func readCerts(ds dataSource, path string) ([]*x509.Certificate, error) {
	b, err := readDataSource(ds, path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no certificates found", path)
	}
	return out, nil
}

// hasChecks reports whether a peer certificate should be requested.
func (v *validator) hasChecks() bool {
	return v != nil && (v.roots != nil || v.spiffe != nil || len(v.spki) > 0 || len(v.hashes) > 0)
}

// verify checks a peer chain (leaf first) as Envoy's default (or SPIFFE)
// certificate validator does. dnsSAN, when set, replaces the configured SAN
// matchers (Envoy's SAN list override: auto_sni_san_validation, or the
// cluster's auto_san_validation): a DNS SAN matching it (wildcards as
// Envoy), a URI SAN equal to it or an IP SAN equal to it must be present.
func (v *validator) verify(chain []*x509.Certificate, dnsSAN string, now time.Time) error {
	if len(chain) == 0 {
		return &VerifyError{FailVerifyNoCert, errors.New("peer did not present a certificate")}
	}
	err := v.verifyChecked(chain, dnsSAN, now)
	if err != nil && v.acceptUntrusted {
		return nil
	}
	return err
}

func (v *validator) verifyChecked(chain []*x509.Certificate, dnsSAN string, now time.Time) error {
	leaf := chain[0]
	switch {
	case v.spiffe != nil:
		if err := v.spiffe.verify(chain, now, v.allowExpired); err != nil {
			return &VerifyError{FailVerifyError, err}
		}
	case v.roots != nil:
		verified, err := v.verifyChain(chain, now)
		if err != nil {
			return &VerifyError{FailVerifyError, err}
		}
		if err := v.checkCRL(verified); err != nil {
			return &VerifyError{FailVerifyError, err}
		}
	}
	if dnsSAN != "" {
		if !matchOverrideSAN(leaf, dnsSAN) {
			return &VerifyError{FailVerifySAN, fmt.Errorf("certificate does not have SAN %q", dnsSAN)}
		}
	} else if len(v.sans) > 0 && !matchAnySAN(v.sans, leaf) {
		return &VerifyError{FailVerifySAN, errors.New("no subject alternative name matches")}
	}
	if len(v.spki) > 0 || len(v.hashes) > 0 {
		h := sha256.Sum256(leaf.Raw)
		s := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		ok := false
		for _, want := range v.hashes {
			ok = ok || bytes.Equal(want, h[:])
		}
		for _, want := range v.spki {
			ok = ok || bytes.Equal(want, s[:])
		}
		if !ok {
			return &VerifyError{FailVerifyCertHash, errors.New("certificate hash or SPKI does not match")}
		}
	}
	return nil
}

// verifyChain verifies chain against the trusted CAs; with allow_expired it
// retries at a time when the leaf was valid.
func (v *validator) verifyChain(chain []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	opts := x509.VerifyOptions{
		Roots:       v.roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := chain[0].Verify(opts)
	var inv x509.CertificateInvalidError
	if err != nil && v.allowExpired && errors.As(err, &inv) && inv.Reason == x509.Expired {
		// Ignore expiry (only): verify at the last instant every presented certificate was valid.
		t := chain[0].NotAfter
		for _, c := range chain[1:] {
			if c.NotAfter.Before(t) {
				t = c.NotAfter
			}
		}
		opts.CurrentTime = t.Add(-time.Second)
		chains, err = chain[0].Verify(opts)
	}
	if err != nil {
		return nil, err
	}
	if v.maxDepth > 0 {
		// As OpenSSL's verify depth: 0 allows a lone self-signed leaf, 1 a leaf and its root.
		for _, c := range chains {
			if len(c)-1 <= v.maxDepth {
				return c, nil
			}
		}
		return nil, fmt.Errorf("certificate chain too long (max_verify_depth %d)", v.maxDepth)
	}
	return chains[0], nil
}

// checkCRL requires, like BoringSSL with X509_V_FLAG_CRL_CHECK(_ALL), a CRL
// from each checked certificate's issuer, and refuses revoked serials.
func (v *validator) checkCRL(verified []*x509.Certificate) error {
	if len(v.crls) == 0 {
		return nil
	}
	n := len(verified) - 1 // the root is not checked
	if v.onlyLeafCRL {
		n = min(n, 1)
	}
	for i := 0; i < n; i++ {
		cert, issuer := verified[i], verified[i+1]
		var found *x509.RevocationList
		for _, crl := range v.crls {
			if bytes.Equal(crl.RawIssuer, cert.RawIssuer) && crl.CheckSignatureFrom(issuer) == nil {
				found = crl
				break
			}
		}
		if found == nil {
			return fmt.Errorf("unable to get certificate CRL for %q", cert.Subject)
		}
		for _, r := range found.RevokedCertificateEntries {
			if r.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				return fmt.Errorf("certificate %q (serial %s) is revoked", cert.Subject, cert.SerialNumber.Text(16))
			}
		}
	}
	return nil
}

func readCRLs(ds dataSource, path string) ([]*x509.RevocationList, error) {
	b, err := readDataSource(ds, path)
	if err != nil {
		return nil, err
	}
	var out []*x509.RevocationList
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "X509 CRL" {
			continue
		}
		crl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, crl)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no CRL found", path)
	}
	return out, nil
}

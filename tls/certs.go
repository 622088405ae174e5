package tlsctx

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"time"
	"weak"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// CertSource is a compiled TLS context that the admin /certs lists.
type CertSource interface {
	// CertificateDetails describes the context's current certificate chains
	// and trusted CA as Envoy's /certs does; empty lists while its secrets
	// have not arrived.
	CertificateDetails(now time.Time) *adminv3.Certificate
}

// Tracker is implemented by secret providers that collect every context
// compiled with them, for /certs and server.days_until_first_cert_expiring.
// The provider gets a weak reference: ref returns nil once the context is
// no longer used (its listener or cluster is gone and garbage collected),
// and the provider should then drop it.
type Tracker interface {
	Track(ref func() CertSource)
}

// track hands secrets a weak reference to c, so that tracking does not keep
// a removed listener's or cluster's context alive.
func track[T any, P interface {
	*T
	CertSource
}](secrets SecretProvider, c P) {
	t, ok := secrets.(Tracker)
	if !ok {
		return
	}
	wp := weak.Make((*T)(c))
	t.Track(func() CertSource {
		if v := wp.Value(); v != nil {
			return P(v)
		}
		return nil
	})
}

// CertificateDetails implements CertSource.
func (s *Server) CertificateDetails(now time.Time) *adminv3.Certificate {
	out := &adminv3.Certificate{}
	st := s.state.Load()
	if st == nil {
		return out
	}
	out.CaCert = st.val.details(now)
	for i, c := range st.certs {
		out.CertChain = append(out.CertChain, chainDetails(c, st.paths[i], now)...)
	}
	return out
}

// CertificateDetails implements CertSource.
func (c *Client) CertificateDetails(now time.Time) *adminv3.Certificate {
	out := &adminv3.Certificate{}
	st := c.state.Load()
	if st == nil {
		return out
	}
	out.CaCert = st.val.details(now)
	if st.cert != nil {
		out.CertChain = chainDetails(st.cert, st.path, now)
	}
	return out
}

func (v *validator) details(now time.Time) []*adminv3.CertificateDetails {
	if v == nil {
		return nil
	}
	var out []*adminv3.CertificateDetails
	for _, c := range v.cas {
		out = append(out, CertDetails(c, v.caPath, now))
	}
	return out
}

// chainDetails is the leaf of c (Envoy lists the leaf of each chain).
func chainDetails(c *tls.Certificate, path string, now time.Time) []*adminv3.CertificateDetails {
	if c == nil || c.Leaf == nil {
		return nil
	}
	return []*adminv3.CertificateDetails{CertDetails(c.Leaf, path, now)}
}

// CertDetails is Envoy's CertificateDetails of one certificate: path
// ("<inline>" when not from a file), lower-case hex serial, SANs, whole
// days until expiration (0 once expired), validity.
func CertDetails(c *x509.Certificate, path string, now time.Time) *adminv3.CertificateDetails {
	d := &adminv3.CertificateDetails{
		Path:                path,
		SerialNumber:        hex.EncodeToString(c.SerialNumber.Bytes()),
		DaysUntilExpiration: DaysUntil(c.NotAfter, now),
		ValidFrom:           timestamppb.New(c.NotBefore),
		ExpirationTime:      timestamppb.New(c.NotAfter),
	}
	for _, n := range c.DNSNames {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Dns{Dns: n}})
	}
	for _, u := range c.URIs {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Uri{Uri: u.String()}})
	}
	for _, ip := range c.IPAddresses {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_IpAddress{IpAddress: ip.String()}})
	}
	return d
}

// DaysUntil is the number of whole days from now to t, 0 when t has passed.
func DaysUntil(t, now time.Time) uint64 {
	if !t.After(now) {
		return 0
	}
	return uint64(t.Sub(now) / (24 * time.Hour))
}

// sourcePath is a data source's file name, "<inline>" otherwise, as /certs
// shows it.
func sourcePath(ds *corev3.DataSource) string {
	if f := ds.GetFilename(); f != "" {
		return f
	}
	return "<inline>"
}

package hcm

import (
	"fmt"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

const xfccHeader = "x-forwarded-client-cert"

// xfccDetail is one set_current_client_cert_details field, in the order
// Envoy writes them.
type xfccDetail uint8

const (
	xfccCert xfccDetail = 1 << iota
	xfccChain
	xfccSubject
	xfccURI
	xfccDNS
)

// compileXFCC reads forward_client_cert_details and
// set_current_client_cert_details.
func (c *Config) compileXFCC(p *hcmv3.HttpConnectionManager) error {
	c.xfcc = p.GetForwardClientCertDetails()
	switch c.xfcc {
	case hcmv3.HttpConnectionManager_SANITIZE, hcmv3.HttpConnectionManager_FORWARD_ONLY,
		hcmv3.HttpConnectionManager_APPEND_FORWARD, hcmv3.HttpConnectionManager_SANITIZE_SET,
		hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
	default:
		return fmt.Errorf("forward_client_cert_details: unknown value %d", c.xfcc)
	}
	d := p.GetSetCurrentClientCertDetails()
	if d == nil {
		return nil
	}
	if err := confcheck.Fields(d, "set_current_client_cert_details", "subject", "cert", "chain", "dns", "uri"); err != nil {
		return err
	}
	// Envoy reads the details only for the modes that set the header.
	if c.xfcc != hcmv3.HttpConnectionManager_APPEND_FORWARD && c.xfcc != hcmv3.HttpConnectionManager_SANITIZE_SET {
		return nil
	}
	for _, f := range []struct {
		on bool
		d  xfccDetail
	}{{d.GetCert(), xfccCert}, {d.GetChain(), xfccChain}, {d.GetSubject().GetValue(), xfccSubject}, {d.GetUri(), xfccURI}, {d.GetDns(), xfccDNS}} {
		if f.on {
			c.xfccDetails |= f.d
		}
	}
	return nil
}

// mutateXFCC is Envoy's ConnectionManagerUtility::mutateXfccRequestHeader:
// ALWAYS_FORWARD_ONLY leaves the header alone; SANITIZE, and every mode on
// a connection without a client certificate, removes it; FORWARD_ONLY keeps
// it; APPEND_FORWARD appends this hop's element and SANITIZE_SET replaces
// the header with it.
func (s *stream) mutateXFCC(h *headers.Map) {
	mode := s.cfg.xfcc
	if mode == hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY {
		return
	}
	t := s.info.Conn.TLS
	if mode == hcmv3.HttpConnectionManager_SANITIZE || t == nil || !t.PeerPresented {
		h.Del(xfccHeader)
		return
	}
	if mode == hcmv3.HttpConnectionManager_FORWARD_ONLY {
		return
	}
	var out []byte
	if mode == hcmv3.HttpConnectionManager_APPEND_FORWARD {
		if v, ok := h.Get(xfccHeader); ok && len(v) > 0 {
			out = append(append(out, v...), ',')
		}
	}
	out = appendXFCCElement(out, t, s.cfg.xfccDetails)
	h.SetBytes(xfccHeader, out)
}

// appendXFCCElement writes one XFCC element: By (the first URI SAN of the
// local certificate), Hash (SHA-256 of the peer certificate), then the
// selected details, joined by ';'. Subject and URI are written even when
// empty, as Envoy does.
func appendXFCCElement(dst []byte, t *streaminfo.TLSInfo, details xfccDetail) []byte {
	start := len(dst)
	sep := func() {
		if len(dst) > start {
			dst = append(dst, ';')
		}
	}
	if len(t.LocalURISANs) > 0 {
		dst = append(append(dst, "By="...), t.LocalURISANs[0]...)
	}
	if t.PeerFingerprintSHA256 != "" {
		sep()
		dst = append(append(dst, "Hash="...), t.PeerFingerprintSHA256...)
	}
	if details&xfccCert != 0 && len(t.PeerCertificates) > 0 {
		sep()
		dst = append(streaminfo.AppendURLEncodedPEM(append(dst, `Cert="`...), t.PeerCertificates[:1]), '"')
	}
	if details&xfccChain != 0 && len(t.PeerCertificates) > 0 {
		sep()
		dst = append(streaminfo.AppendURLEncodedPEM(append(dst, `Chain="`...), t.PeerCertificates), '"')
	}
	if details&xfccSubject != 0 {
		sep()
		dst = append(append(append(dst, `Subject="`...), t.PeerSubject...), '"')
	}
	if details&xfccURI != 0 {
		sep()
		dst = append(dst, "URI="...)
		if len(t.PeerURISANs) > 0 {
			dst = append(dst, t.PeerURISANs[0]...)
		}
	}
	if details&xfccDNS != 0 {
		for _, d := range t.PeerDNSSANs {
			sep()
			dst = append(append(dst, "DNS="...), d...)
		}
	}
	return dst
}

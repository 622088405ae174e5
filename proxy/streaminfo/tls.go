package streaminfo

import (
	"crypto/x509"
	"encoding/pem"
)

// AppendURLEncodedPEM appends certs in PEM form, one block after the other,
// URL-encoded as Envoy's urlEncodedPemEncodedPeerCertificate(Chain) does:
// every byte but ALPHA, DIGIT and "-._~" becomes %XX (upper-case hex). It
// appends nothing for no certificates.
func AppendURLEncodedPEM(dst []byte, certs []*x509.Certificate) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range certs {
		for _, b := range pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) {
			switch {
			case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '-', b == '.', b == '_', b == '~':
				dst = append(dst, b)
			default:
				dst = append(dst, '%', hex[b>>4], hex[b&0xf])
			}
		}
	}
	return dst
}

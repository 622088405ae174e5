package formatter

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// TLS operators read streaminfo.Conn.TLS; every one is missing ("-") on a
// plaintext connection or when the handshake did not yield the value.
const (
	kPeerURISAN kind = iota + 64
	kPeerDNSSAN
	kLocalURISAN
	kLocalDNSSAN
	kLocalSubject
	kPeerSubject
	kPeerIssuer
	kTLSSessionID
	kTLSCipher
	kTLSVersion
	kPeerFingerprint256
	kPeerFingerprint1
	kPeerSerial
	kPeerCert
	kPeerCertVStart
	kPeerCertVEnd
)

var tlsCommands = map[string]kind{
	"DOWNSTREAM_PEER_URI_SAN":         kPeerURISAN,
	"DOWNSTREAM_PEER_DNS_SAN":         kPeerDNSSAN,
	"DOWNSTREAM_LOCAL_URI_SAN":        kLocalURISAN,
	"DOWNSTREAM_LOCAL_DNS_SAN":        kLocalDNSSAN,
	"DOWNSTREAM_LOCAL_SUBJECT":        kLocalSubject,
	"DOWNSTREAM_PEER_SUBJECT":         kPeerSubject,
	"DOWNSTREAM_PEER_ISSUER":          kPeerIssuer,
	"DOWNSTREAM_TLS_SESSION_ID":       kTLSSessionID,
	"DOWNSTREAM_TLS_CIPHER":           kTLSCipher,
	"DOWNSTREAM_TLS_VERSION":          kTLSVersion,
	"DOWNSTREAM_PEER_FINGERPRINT_256": kPeerFingerprint256,
	"DOWNSTREAM_PEER_FINGERPRINT_1":   kPeerFingerprint1,
	"DOWNSTREAM_PEER_SERIAL":          kPeerSerial,
	"DOWNSTREAM_PEER_CERT":            kPeerCert,
	"DOWNSTREAM_PEER_CERT_V_START":    kPeerCertVStart,
	"DOWNSTREAM_PEER_CERT_V_END":      kPeerCertVEnd,
}

// parseTLSCommand compiles a TLS operator; ok=false when cmd is not one.
// The validity operators take an optional START_TIME-style layout.
func parseTLSCommand(cmd, arg string, maxLen int) (p part, ok bool, err error) {
	k, ok := tlsCommands[cmd]
	if !ok {
		return part{}, false, nil
	}
	if k == kPeerCertVStart || k == kPeerCertVEnd {
		if maxLen >= 0 {
			return part{}, true, fmt.Errorf("%s does not allow length to be specified", cmd)
		}
		tf, err := compileTimeFormat(arg)
		if err != nil {
			return part{}, true, fmt.Errorf("%s(%s): %w", cmd, arg, err)
		}
		return part{kind: k, tf: tf}, true, nil
	}
	if arg != "" || maxLen >= 0 {
		return part{}, true, fmt.Errorf("%s does not take any parameters or length", cmd)
	}
	return part{kind: k}, true, nil
}

// appendTLS renders a TLS operator of connection c (nil when unknown).
func appendTLS(dst []byte, p *part, c *streaminfo.Conn) ([]byte, bool) {
	if c == nil || c.TLS == nil {
		return dst, false
	}
	t := c.TLS
	switch p.kind {
	case kPeerURISAN:
		return appendJoined(dst, t.PeerURISANs)
	case kPeerDNSSAN:
		return appendJoined(dst, t.PeerDNSSANs)
	case kLocalURISAN:
		return appendJoined(dst, t.LocalURISANs)
	case kLocalDNSSAN:
		return appendJoined(dst, t.LocalDNSSANs)
	case kLocalSubject:
		return appendStr(dst, t.LocalSubject)
	case kPeerSubject:
		return appendStr(dst, t.PeerSubject)
	case kPeerIssuer:
		return appendStr(dst, t.PeerIssuer)
	case kTLSCipher:
		return appendStr(dst, t.Cipher)
	case kTLSVersion:
		return appendStr(dst, t.Version)
	case kPeerFingerprint256:
		return appendStr(dst, t.PeerFingerprintSHA256)
	case kPeerFingerprint1:
		if len(t.PeerCertificates) == 0 {
			return dst, false
		}
		h := sha1.Sum(t.PeerCertificates[0].Raw)
		return hex.AppendEncode(dst, h[:]), true
	case kPeerSerial:
		return appendStr(dst, t.PeerSerial)
	case kPeerCert:
		if len(t.PeerCertificates) == 0 {
			return dst, false
		}
		return streaminfo.AppendURLEncodedPEM(dst, t.PeerCertificates[:1]), true
	case kPeerCertVStart:
		if t.PeerValidFrom.IsZero() {
			return dst, false
		}
		return p.tf.append(dst, t.PeerValidFrom), true
	case kPeerCertVEnd:
		if t.PeerExpires.IsZero() {
			return dst, false
		}
		return p.tf.append(dst, t.PeerExpires), true
	}
	return dst, false // kTLSSessionID: crypto/tls does not expose session ids
}

// appendJoined renders a list as Envoy does: joined with ",", missing when
// empty.
func appendJoined(dst []byte, vs []string) ([]byte, bool) {
	for i, v := range vs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, v...)
	}
	return dst, len(vs) > 0
}

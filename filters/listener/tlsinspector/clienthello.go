package tlsinspector

import (
	"golang.org/x/crypto/cryptobyte"
)

// Status is the outcome of parsing the bytes read so far.
type Status uint8

const (
	// NeedMore: the bytes are a TLS handshake prefix; read more.
	NeedMore Status = iota
	// Found: a complete ClientHello was parsed.
	Found
	// NotTLS: the bytes are not a TLS ClientHello (or are a malformed one).
	NotTLS
	// TooLarge: the ClientHello exceeds the size limit.
	TooLarge
)

// ClientHello holds what the inspector takes from a ClientHello.
type ClientHello struct {
	ServerName string   // first host_name of server_name, as sent ("" if absent)
	ALPN       []string // application_layer_protocol_negotiation protocols, in order
	HasSNI     bool
	HasALPN    bool
}

const (
	recordHeaderLen   = 5
	recordTypeHS      = 22
	handshakeTypeHelo = 1
	maxRecordLen      = 1<<14 + 2048 // plaintext bound with slack, as crypto/tls accepts
	extServerName     = 0
	extALPN           = 16
)

// ParseClientHello parses a ClientHello from the first bytes of a connection,
// which may span several handshake records. max bounds the handshake message
// (header included); 0 means 16 KiB.
func ParseClientHello(b []byte, max int) (ClientHello, Status) {
	if max <= 0 {
		max = 16 << 10
	}
	var msg []byte // reassembled handshake bytes
	for len(b) > 0 {
		if b[0] != recordTypeHS {
			return ClientHello{}, NotTLS
		}
		if len(b) >= 2 && b[1] != 3 {
			return ClientHello{}, NotTLS
		}
		if len(b) < recordHeaderLen {
			return ClientHello{}, NeedMore
		}
		n := int(b[3])<<8 | int(b[4])
		if n == 0 || n > maxRecordLen {
			return ClientHello{}, NotTLS
		}
		if len(b) < recordHeaderLen+n {
			msg = append(msg, b[recordHeaderLen:]...)
			b = nil
		} else {
			msg = append(msg, b[recordHeaderLen:recordHeaderLen+n]...)
			b = b[recordHeaderLen+n:]
		}
		if len(msg) >= 4 {
			if msg[0] != handshakeTypeHelo {
				return ClientHello{}, NotTLS
			}
			hl := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if 4+hl > max {
				return ClientHello{}, TooLarge
			}
			if len(msg) >= 4+hl {
				ch, ok := parseHello(msg[4 : 4+hl])
				if !ok {
					return ClientHello{}, NotTLS
				}
				return ch, Found
			}
		}
		if len(msg) > max {
			return ClientHello{}, TooLarge
		}
	}
	return ClientHello{}, NeedMore
}

func parseHello(body []byte) (ClientHello, bool) {
	var ch ClientHello
	s := cryptobyte.String(body)
	var version uint16
	var random, sessionID, suites, compression cryptobyte.String
	if !s.ReadUint16(&version) || !s.ReadBytes((*[]byte)(&random), 32) ||
		!s.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites) < 2 || len(suites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&compression) || len(compression) < 1 {
		return ch, false
	}
	if version>>8 != 3 {
		return ch, false
	}
	if s.Empty() {
		return ch, true // no extensions
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return ch, false
	}
	seen := map[uint16]bool{}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return ch, false
		}
		if seen[typ] {
			return ch, false // duplicate extensions are illegal
		}
		seen[typ] = true
		switch typ {
		case extServerName:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
				return ch, false
			}
			for !list.Empty() {
				var nameType uint8
				var name cryptobyte.String
				if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
					return ch, false
				}
				if nameType == 0 && !ch.HasSNI {
					if len(name) == 0 {
						return ch, false
					}
					ch.ServerName, ch.HasSNI = string(name), true
				}
			}
		case extALPN:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
				return ch, false
			}
			for !list.Empty() {
				var proto cryptobyte.String
				if !list.ReadUint8LengthPrefixed(&proto) || proto.Empty() {
					return ch, false
				}
				ch.ALPN = append(ch.ALPN, string(proto))
			}
			ch.HasALPN = true
		}
	}
	return ch, true
}

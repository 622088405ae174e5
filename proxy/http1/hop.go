package http1

import "github.com/outrider-proxy/outrider/proxy/headers"

var (
	teName        = []byte("te")
	trailersValue = []byte("trailers")
	connName      = []byte("connection")
	upgradeValue  = []byte("upgrade")
)

// StripHopByHop removes connection-specific headers before forwarding, as
// Envoy does: connection, keep-alive, proxy-connection, transfer-encoding,
// upgrade (kept when keepUpgrade, with "connection: upgrade" appended), te
// (kept only as "te: trailers" when it listed trailers, appended at the end),
// and every header named in Connection. It allocates nothing for up to 16
// Connection tokens (more are ignored).
func StripHopByHop(h *headers.Map, keepUpgrade bool) {
	// Snapshot the Connection tokens: DelFunc rewrites the field list, but
	// the bytes the tokens point to stay put.
	var nominated [16][]byte
	nn := 0
	keepTE := false
	for _, f := range h.Fields() {
		switch string(f.Name) {
		case "connection":
			v := f.Value
			for len(v) > 0 && nn < len(nominated) {
				var item []byte
				if i := indexByte(v, ','); i >= 0 {
					item, v = v[:i], v[i+1:]
				} else {
					item, v = v, nil
				}
				if item = trimOWS(item); len(item) > 0 {
					nominated[nn] = item
					nn++
				}
			}
		case "te":
			keepTE = keepTE || hasToken(f.Value, "trailers")
		}
	}
	h.DelFunc(func(f headers.Field) bool {
		switch string(f.Name) {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te":
			return true
		case "upgrade":
			return !keepUpgrade
		}
		for _, n := range nominated[:nn] {
			if bytesEqualFold(f.Name, n) {
				return true
			}
		}
		return false
	})
	if keepTE {
		h.AppendRef(teName, trailersValue)
	}
	if keepUpgrade && h.Has("upgrade") {
		h.AppendRef(connName, upgradeValue)
	}
}

func bytesEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lowerByte(a[i]) != lowerByte(b[i]) {
			return false
		}
	}
	return true
}

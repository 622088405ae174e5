package router

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// maxInterned bounds the names one filter object interns.
const maxInterned = 64

// h2Names converts between outrider's headers.Map and x/net's http.Header
// for the HTTP/2 upstream with few allocations: field names are interned
// per filter object (kept across its streams), and a request's values share
// one string and one slice array. The zero value is ready to use.
type h2Names struct {
	key   map[string]string // request field name → itself as a string
	lower map[string]string // x/net's (canonical) response key → lower case
	vbuf  []byte
}

// reqKey is name as a string, interned.
func (n *h2Names) reqKey(name []byte) string {
	if k, ok := n.key[string(name)]; ok {
		return k
	}
	k := string(name)
	if len(n.key) < maxInterned {
		if n.key == nil {
			n.key = make(map[string]string)
		}
		n.key[k] = k
	}
	return k
}

// lowerKey is x/net's key k in lower case, interned.
func (n *h2Names) lowerKey(k string) string {
	if l, ok := n.lower[k]; ok {
		return l
	}
	l := strings.ToLower(k)
	if len(n.lower) < maxInterned {
		if n.lower == nil {
			n.lower = make(map[string]string)
		}
		n.lower[k] = l
	}
	return l
}

// toRequest fills req from h (making req.Header): method, path (URL.Opaque and RawQuery),
// Host from :authority, ContentLength from content-length, and the regular
// fields, leaving out those HTTP/2 forbids (te is kept only as "trailers").
func (n *h2Names) toRequest(req *http.Request, h *headers.Map) {
	fields := h.Fields()
	vb, regular := n.vbuf[:0], 0
	for _, fl := range fields {
		vb = append(vb, fl.Value...)
		if h2Regular(fl.Name) {
			regular++
		}
	}
	n.vbuf = vb
	req.Header = make(http.Header, regular+1) // +1: te; a small hint keeps the map in one group
	all := string(vb)
	var vals []string
	if regular > 0 {
		vals = make([]string, regular)
	}
	off, i := 0, 0
	for _, fl := range fields {
		v := all[off : off+len(fl.Value)]
		off += len(fl.Value)
		switch string(fl.Name) {
		case headers.Method:
			req.Method = v
			continue
		case headers.Path:
			p := v
			if j := strings.IndexByte(p, '?'); j >= 0 {
				req.URL.RawQuery, p = p[j+1:], p[:j]
			}
			req.URL.Opaque = p
			continue
		case headers.Authority:
			req.Host = v
			continue
		case "content-length":
			if cl, err := strconv.ParseInt(v, 10, 64); err == nil {
				req.ContentLength = cl
			}
			continue
		case "te":
			if strings.EqualFold(strings.TrimSpace(v), "trailers") {
				req.Header["te"] = []string{"trailers"}
			}
			continue
		}
		if !h2Regular(fl.Name) {
			continue
		}
		k := n.reqKey(fl.Name)
		if old, ok := req.Header[k]; ok {
			req.Header[k] = append(old, v) // a repeated field
			continue
		}
		vals[i] = v
		req.Header[k] = vals[i : i+1 : i+1]
		i++
	}
}

// h2Regular reports whether a request field goes upstream as a regular
// HTTP/2 field: not a pseudo-header, not connection-specific, not one
// toRequest turns into a request property.
func h2Regular(name []byte) bool {
	if len(name) > 0 && name[0] == ':' {
		return false
	}
	return string(name) != "te" && !h2Skip[string(name)]
}

// fromHeader adds x/net's fields to m with lower-case names, leaving out
// the connection-specific ones.
func (n *h2Names) fromHeader(m *headers.Map, h http.Header) {
	for k, vv := range h {
		name := n.lowerKey(k)
		if h2Skip[name] && name != "content-length" {
			continue
		}
		for _, v := range vv {
			m.Add(name, v)
		}
	}
}

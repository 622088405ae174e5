package http1

import (
	"io"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// Names of the pseudo-headers, shared by every parsed map (never modified).
var (
	nameMethod    = []byte(headers.Method)
	namePath      = []byte(headers.Path)
	nameAuthority = []byte(headers.Authority)
	nameScheme    = []byte(headers.Scheme)
	nameStatus    = []byte(headers.Status)
	slashPath     = []byte("/")
)

// fieldInfo is what the framing rules need from a header block.
type fieldInfo struct {
	host          []byte
	hostCount     int
	cl            []byte
	clCount       int
	te            []byte
	teCount       int
	connClose     bool
	connKeepAlive bool
	connUpgrade   bool
	upgrade       []byte
	upgradeCount  int
	expect        []byte
}

// parseFields parses the field lines of block (each ending in CRLF, the
// final empty line excluded), appending them to h with lower-cased names.
// When dropHost is set, Host lines are recorded in fi but not appended.
func (d *Decoder) parseFields(block []byte, h *headers.Map, fi *fieldInfo, dropHost bool, count int) (int, error) {
	for len(block) > 0 {
		i := indexByte(block, '\n')
		line := block[:i-1] // without CRLF (readBlock checked the CR)
		block = block[i+1:]
		if line[0] == ' ' || line[0] == '\t' {
			return count, errObsFold
		}
		colon := indexByte(line, ':')
		if colon < 0 {
			return count, errNoColon
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		if !isToken(name) {
			return count, errHeaderName
		}
		if !validValue(value) {
			return count, errHeaderValue
		}
		for j, c := range name {
			if c >= 'A' && c <= 'Z' {
				name[j] = c + 'a' - 'A'
			}
		}
		count++
		if count > d.lim.MaxHeaders {
			return count, errTooMany
		}
		if fi != nil {
			switch string(name) {
			case "host":
				fi.host = value
				fi.hostCount++
				if dropHost {
					continue
				}
			case "content-length":
				fi.cl = value
				fi.clCount++
				if fi.clCount > 1 {
					return count, errDupCL
				}
			case "transfer-encoding":
				fi.te = value
				fi.teCount++
			case "connection":
				fi.connClose = fi.connClose || hasToken(value, "close")
				fi.connKeepAlive = fi.connKeepAlive || hasToken(value, "keep-alive")
				fi.connUpgrade = fi.connUpgrade || hasToken(value, "upgrade")
			case "upgrade":
				fi.upgrade = value
				fi.upgradeCount++
			case "expect":
				fi.expect = value
			}
		}
		h.AppendRef(name, value)
	}
	return count, nil
}

// parseVersion parses "HTTP/d.d"; anything but 1.1 is reported as 1.0.
func parseVersion(v []byte) (major, minor int, ok bool) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9' {
		return 0, 0, false
	}
	if v[5] == '1' && v[7] == '1' {
		return 1, 1, true
	}
	return 1, 0, true
}

// ReadRequestHeaders reads the next request's headers into h, which is reset
// first. h gets ":method", ":path" (the request-target as sent), ":authority"
// (from Host, which is not kept as a field of its own; from the target for an
// absolute-form or CONNECT target, with ":scheme" for the former), then every
// other field in order with lower-cased names. The bytes h references stay
// valid until the next ReadRequestHeaders/ReadResponseHeaders or Release.
//
// It returns io.EOF when the connection closed cleanly between messages, an
// *Error for a protocol violation (never forward such a request), or the
// reader's error. The previous body must have been read to io.EOF.
func (d *Decoder) ReadRequestHeaders(h *headers.Map) (Message, error) {
	h.Reset()
	if err := d.beginMessage(); err != nil {
		return Message{}, err
	}
	end, err := d.readBlock(d.lim.MaxHeaderBytes, errTooLarge)
	if err != nil {
		return Message{}, err
	}
	blk := d.buf[d.rd:end]
	d.keep = end
	d.rd = end
	d.isResp = false
	m, err := d.parseRequest(blk, h)
	if err != nil {
		d.fail = err
		return Message{}, err
	}
	return m, nil
}

func (d *Decoder) parseRequest(blk []byte, h *headers.Map) (Message, error) {
	m := Message{ContentLength: -1}
	i := indexByte(blk, '\n')
	if i+1 == len(blk) {
		return m, errRequestLine // the block is a lone empty line
	}
	line, fields := blk[:i-1], blk[i+1:len(blk)-2]
	if string(line) == "PRI * HTTP/2.0" {
		return m, errH2Preface
	}
	sp1 := indexByte(line, ' ')
	if sp1 < 0 {
		return m, errRequestLine
	}
	method, rest := line[:sp1], line[sp1+1:]
	sp2 := indexByte(rest, ' ')
	if sp2 < 0 {
		return m, errRequestLine
	}
	target, version := rest[:sp2], rest[sp2+1:]
	if !methodValid(method, d.lim.AllowCustomMethods) {
		return m, errMethod
	}
	m.Connect = string(method) == "CONNECT"
	if !urlValid(target, m.Connect) {
		return m, errURL
	}
	var ok bool
	if m.Major, m.Minor, ok = parseVersion(version); !ok {
		return m, errVersion
	}

	h.AppendRef(nameMethod, method)
	origin := !m.Connect && (target[0] == '/' || (target[0] == '*' && string(method) == "OPTIONS"))
	authIdx := -1
	switch {
	case origin:
		h.AppendRef(namePath, target)
		authIdx = h.Len()
		h.AppendRef(nameAuthority, nil)
	case m.Connect:
		if !validConnectTarget(target) {
			return m, errInvalidURL
		}
		h.AppendRef(nameAuthority, target)
	default:
		if err := absoluteTarget(target, h); err != nil {
			return m, err
		}
	}
	var fi fieldInfo
	if _, err := d.parseFields(fields, h, &fi, true, 0); err != nil {
		return m, err
	}

	// Upgrade, as Envoy: h2c is not supported and its headers are removed.
	if fi.upgradeCount > 0 && fi.connUpgrade {
		if fi.upgradeCount == 1 && equalFold(fi.upgrade, "h2c") {
			m.H2CUpgrade = true
			removeH2C(h)
		} else {
			m.Upgrade = true
		}
	}
	if m.Connect && fi.clCount > 0 {
		if string(fi.cl) != "0" {
			return m, errConnectBody
		}
		h.Del("content-length")
		fi.clCount = 0
	}
	if err := checkFraming(&fi, &m, m.Connect); err != nil {
		return m, err
	}

	if origin {
		if fi.hostCount > 1 {
			return m, errDupHost
		}
		if fi.hostCount == 1 {
			h.Fields()[authIdx].Value = fi.host
		} else {
			h.Del(headers.Authority)
		}
	}
	if m.Minor != 1 && !d.lim.AcceptHTTP10 {
		return m, errLowVersion
	}
	if a, ok := h.Get(headers.Authority); ok && !validAuthority(a) {
		return m, errAuthority
	} else if !ok && m.Minor == 1 {
		return m, errMissingHost
	}

	if m.Minor == 1 {
		m.KeepAlive = !fi.connClose
		m.Expect100 = equalFold(fi.expect, "100-continue")
	} else {
		m.KeepAlive = fi.connKeepAlive && !fi.connClose
	}
	switch {
	case m.Upgrade || m.Connect:
		m.Tunnel = true
		d.mode = bodyRaw
	case m.Chunked:
		d.mode, d.chunk = bodyChunked, chunkSize
	case m.ContentLength > 0:
		d.mode, d.remaining = bodyLength, m.ContentLength
	default:
		m.NoBody = true
		d.mode = bodyDone
	}
	return m, nil
}

// checkFraming applies Envoy's Content-Length / Transfer-Encoding rules.
func checkFraming(fi *fieldInfo, m *Message, connect bool) error {
	if fi.teCount > 0 && fi.clCount > 0 {
		return errCLAndTE
	}
	if fi.teCount > 0 {
		// Envoy joins repeated headers with "," so only one plain "chunked" passes.
		if fi.teCount > 1 || !equalFold(fi.te, "chunked") || connect {
			return errTE
		}
		m.Chunked = true
	}
	if fi.clCount > 0 {
		n, ok := parseDecimal(fi.cl)
		if !ok {
			return errBadCL
		}
		m.ContentLength = n
	}
	return nil
}

// validConnectTarget accepts an authority-form "host:port".
func validConnectTarget(t []byte) bool {
	c := -1
	for i := len(t) - 1; i >= 0; i-- {
		if t[i] == ':' {
			c = i
			break
		}
	}
	if c <= 0 || c == len(t)-1 || len(t)-c-1 > 5 {
		return false
	}
	for _, ch := range t[c+1:] {
		if ch < '0' || ch > '9' {
			return false
		}
	}
	for _, ch := range t {
		if ch == '/' || ch == '@' || ch == '?' || ch == '#' {
			return false
		}
	}
	return true
}

// absoluteTarget splits "scheme://authority/path?query" into ":scheme",
// ":path" and ":authority" (RFC 9112 3.2.2: the Host field is then ignored).
func absoluteTarget(t []byte, h *headers.Map) error {
	i := 0
	for i < len(t) && t[i] != ':' {
		i++
	}
	if i == 0 || len(t)-i < 3 || string(t[i:i+3]) != "://" {
		return errInvalidURL // e.g. "*" with a method other than OPTIONS
	}
	scheme, rest := t[:i], t[i+3:]
	auth := rest
	var path []byte
	for j, c := range rest {
		if c == '/' || c == '?' {
			auth, path = rest[:j], rest[j:]
			break
		}
	}
	if len(auth) == 0 || indexByte(auth, '@') >= 0 {
		return errInvalidURL
	}
	for j, c := range scheme {
		scheme[j] = lowerByte(c)
	}
	if string(scheme) != "http" && string(scheme) != "https" {
		return errInvalidScheme
	}
	h.AppendRef(nameScheme, scheme)
	switch {
	case len(path) == 0:
		h.AppendRef(namePath, slashPath)
	case path[0] == '?':
		h.Add(headers.Path, "/"+string(path))
	default:
		h.AppendRef(namePath, path)
	}
	h.AppendRef(nameAuthority, auth)
	return nil
}

// removeH2C strips an "Upgrade: h2c" request down to plain HTTP/1.1, as
// Envoy's codec does: no upgrade or http2-settings fields, and no
// "upgrade"/"http2-settings" tokens left in Connection (rewritten in place).
func removeH2C(h *headers.Map) {
	h.Del("upgrade")
	h.Del("http2-settings")
	fs := h.Fields()
	for i := range fs {
		if string(fs[i].Name) == "connection" {
			fs[i].Value = removeTokens(fs[i].Value, "upgrade", "http2-settings")
		}
	}
	h.DelFunc(func(f headers.Field) bool { return string(f.Name) == "connection" && len(f.Value) == 0 })
}

// removeTokens drops the listed tokens from a comma-separated list, writing
// the kept ones joined by "," over v (the result is never longer).
func removeTokens(v []byte, drop1, drop2 string) []byte {
	out := v[:0]
	rest := v
	for len(rest) > 0 {
		var item []byte
		if i := indexByte(rest, ','); i >= 0 {
			item, rest = rest[:i], rest[i+1:]
		} else {
			item, rest = rest, nil
		}
		item = trimOWS(item)
		if len(item) == 0 || equalFold(item, drop1) || equalFold(item, drop2) {
			continue
		}
		if len(out) > 0 {
			out = append(out, ',')
		}
		out = append(out, item...) // copy moves bytes left: never past what was read
	}
	return out
}

// ReadResponseHeaders reads the next response's headers into h (reset
// first): ":status", then every field in order with lower-cased names.
// requestMethod is the method of the request it answers (HEAD and CONNECT
// change the framing). A 1xx response is returned as its own Message with
// NoBody set; the caller loops for the final response. Lifetime and errors
// are as for ReadRequestHeaders, with Status 502 on protocol errors.
func (d *Decoder) ReadResponseHeaders(h *headers.Map, requestMethod []byte) (Message, error) {
	h.Reset()
	if err := d.beginMessage(); err != nil {
		return Message{}, err
	}
	end, err := d.readBlock(d.lim.MaxHeaderBytes, errTooLarge)
	if err != nil {
		if err == io.EOF {
			return Message{}, err
		}
		return Message{}, asResponse(err)
	}
	blk := d.buf[d.rd:end]
	d.keep = end
	d.rd = end
	d.isResp = true
	m, err := d.parseResponse(blk, h, requestMethod)
	if err != nil {
		err = asResponse(err)
		d.fail = err
		return Message{}, err
	}
	return m, nil
}

func (d *Decoder) parseResponse(blk []byte, h *headers.Map, method []byte) (Message, error) {
	m := Message{ContentLength: -1}
	i := indexByte(blk, '\n')
	if i+1 == len(blk) {
		return m, errStatusLine
	}
	line, fields := blk[:i-1], blk[i+1:len(blk)-2]
	if len(line) < 12 || line[8] != ' ' {
		return m, errStatusLine
	}
	var ok bool
	if m.Major, m.Minor, ok = parseVersion(line[:8]); !ok {
		return m, errStatusLine
	}
	code := line[9:12]
	for _, c := range code {
		if c < '0' || c > '9' {
			return m, errStatusLine
		}
	}
	m.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if m.Status < 100 || (len(line) > 12 && line[12] != ' ') || !validValue(line[12:]) {
		return m, errStatusLine
	}
	h.AppendRef(nameStatus, code)
	var fi fieldInfo
	if _, err := d.parseFields(fields, h, &fi, false, 0); err != nil {
		return m, err
	}
	if err := checkFraming(&fi, &m, false); err != nil {
		return m, err
	}
	if m.Status < 200 || m.Status == 204 {
		if fi.teCount > 0 {
			return m, errRespTE1xx
		}
		if fi.clCount > 0 {
			if m.ContentLength != 0 {
				return m, errRespCL1xx
			}
			h.Del("content-length")
			m.ContentLength = -1
		}
	}
	if m.Minor == 1 {
		m.KeepAlive = !fi.connClose
	} else {
		m.KeepAlive = fi.connKeepAlive && !fi.connClose
	}
	head := string(method) == "HEAD"
	switch {
	case m.Status == 101:
		m.Upgrade, m.Tunnel = true, true
		d.mode = bodyRaw
	case m.Status < 200 || m.Status == 204 || m.Status == 304 || head:
		m.NoBody = true
		d.mode = bodyDone
	case string(method) == "CONNECT" && m.Status < 300:
		m.Tunnel = true
		d.mode = bodyRaw
	case m.Chunked:
		d.mode, d.chunk = bodyChunked, chunkSize
	case m.ContentLength == 0:
		m.NoBody = true
		d.mode = bodyDone
	case m.ContentLength > 0:
		d.mode, d.remaining = bodyLength, m.ContentLength
	default:
		m.CloseDelimited = true
		m.KeepAlive = false
		d.mode = bodyRaw
	}
	return m, nil
}

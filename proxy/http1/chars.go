package http1

// Character classes of RFC 9110, as tables indexed by byte.
var (
	tokenChar   [256]bool // tchar: field names and methods
	valueChar   [256]bool // field-vchar, SP and HTAB (obs-text allowed), as Envoy's header value check
	urlChar     [256]bool // what Envoy's (http-parser compatible) URL check allows in path and query
	hostChar    [256]bool // what it allows in the host part of an absolute URL
	authorityCh [256]bool // what nghttp2's authority check allows in Host / :authority
	hexVal      [256]int8 // value of a hex digit, -1 otherwise
)

func init() {
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		tokenChar[c] = true
	}
	for c := 0; c < 256; c++ {
		b := byte(c)
		alnum := (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')
		if alnum {
			tokenChar[c] = true
		}
		valueChar[c] = c == '\t' || (c >= 0x20 && c != 0x7f)
		urlChar[c] = c == 9 || c == 12 || (c >= '!' && c <= 126)
		hostChar[c] = alnum
		authorityCh[c] = alnum
		hexVal[c] = -1
		switch {
		case b >= '0' && b <= '9':
			hexVal[c] = int8(b - '0')
		case b >= 'a' && b <= 'f':
			hexVal[c] = int8(b - 'a' + 10)
		case b >= 'A' && b <= 'F':
			hexVal[c] = int8(b - 'A' + 10)
		}
	}
	for _, c := range []byte("!$%&'()*+,-.:;=@[]_~") {
		hostChar[c] = true
	}
	for _, c := range []byte("-._~%!$&'()*+,;=:@[]") {
		authorityCh[c] = true
	}
}

// knownMethods is Envoy's list of accepted methods when custom methods are off.
var knownMethods = [...]string{
	"ACL", "BIND", "CHECKOUT", "CONNECT", "COPY", "DELETE", "GET",
	"HEAD", "LINK", "LOCK", "MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL",
	"MOVE", "MSEARCH", "NOTIFY", "OPTIONS", "PATCH", "POST", "PROPFIND",
	"PROPPATCH", "PURGE", "PUT", "REBIND", "REPORT", "SEARCH", "SOURCE",
	"SUBSCRIBE", "TRACE", "UNBIND", "UNLINK", "UNLOCK", "UNSUBSCRIBE",
}

func methodValid(m []byte, custom bool) bool {
	if len(m) == 0 {
		return false
	}
	if custom {
		for _, c := range m {
			if !tokenChar[c] {
				return false
			}
		}
		return true
	}
	for _, k := range knownMethods {
		if string(m) == k {
			return true
		}
	}
	return false
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return true
}

func validValue(b []byte) bool {
	for _, c := range b {
		if !valueChar[c] {
			return false
		}
	}
	return true
}

func validAuthority(b []byte) bool {
	for _, c := range b {
		if !authorityCh[c] {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

// urlValid is Envoy's isUrlValid (balsa_parser.cc), which mirrors http-parser.
func urlValid(u []byte, connect bool) bool {
	if len(u) == 0 {
		return false
	}
	if u[0] == '/' || u[0] == '*' {
		for _, c := range u[1:] {
			if !urlChar[c] {
				return false
			}
		}
		return true
	}
	if !connect {
		if !isAlpha(u[0]) {
			return false
		}
		i := 1
		for i < len(u) && (isAlpha(u[i]) || (u[i] >= '0' && u[i] <= '9') || u[i] == '+' || u[i] == '-' || u[i] == '.') {
			i++
		}
		u = u[i:]
		if len(u) < 3 || string(u[:3]) != "://" {
			return false
		}
		u = u[3:]
	}
	i := 0
	for i < len(u) && u[i] != '/' && u[i] != '?' {
		if !hostChar[u[i]] || (u[i] == '@' && i > 0 && u[i-1] == '@') {
			return false
		}
		i++
	}
	for _, c := range u[i:] {
		if !urlChar[c] {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v contains tok (ASCII
// case-insensitive, surrounding whitespace ignored).
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var item []byte
		if i := indexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			item, v = v, nil
		}
		if equalFold(trimOWS(item), tok) {
			return true
		}
	}
	return false
}

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lowerByte(b[i]) != lowerByte(s[i]) {
			return false
		}
	}
	return true
}

func lowerByte(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// parseDecimal parses a Content-Length value: digits only, fitting in int64.
func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (1<<63-1-int64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

package extauthz

// validate_mutations: an answer whose header or query parameter mutations
// are malformed is rejected with 500 (details ext_authz_invalid).

const detailsInvalid = "ext_authz_invalid"

// validName is Envoy's HeaderUtility::headerNameIsValid: a token, or ':' and
// a lower-case token for a pseudo-header.
func validName(n string) bool {
	pseudo := len(n) > 0 && n[0] == ':'
	if pseudo {
		n = n[1:]
	}
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !isTokenChar(c) || (pseudo && c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// validValue is Envoy's HeaderUtility::headerValueIsValid: visible
// characters, obs-text, space and tab.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// urlEncoded is Envoy's PercentEncoding::queryParameterIsUrlEncoded: only
// ALPHA, DIGIT, "*-._" and percent escapes appear unencoded.
func urlEncoded(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '*', c == '-', c == '.', c == '_', c == '%':
		default:
			return false
		}
	}
	return true
}

func validHeaders(lists ...[]kv) bool {
	for _, l := range lists {
		for _, e := range l {
			if !validName(e.k) || !validValue(e.v) {
				return false
			}
		}
	}
	return true
}

// validOK reports whether an OK answer's mutations are well formed; invalid
// names in headers_to_remove are only skipped.
func validOK(r *response) bool {
	if !validHeaders(r.headersToSet, r.headersToAdd, r.headersToAppend,
		r.respAdd, r.respSet, r.respAddIfAbsent, r.respOverwriteIfExists) {
		return false
	}
	for _, q := range r.querySet {
		if !urlEncoded(q.k) || !urlEncoded(q.v) {
			return false
		}
	}
	return true
}

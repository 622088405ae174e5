package http1

import (
	"errors"
	"strings"
	"testing"
)

func TestRequestRejected(t *testing.T) {
	long := strings.Repeat("a", 61<<10)
	many := strings.Repeat("x-h: v\r\n", 100)
	tests := []struct {
		name    string
		req     string
		lim     Limits
		status  int
		details string
	}{
		{"cl and te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Limits{}, 400, DetailChunkedContentLength},
		{"te and cl", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", Limits{}, 400, DetailChunkedContentLength},
		{"duplicate cl equal", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", Limits{}, 400, DetailCodecError},
		{"duplicate cl differ", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", Limits{}, 400, DetailCodecError},
		{"cl list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", Limits{}, 400, DetailCodecError},
		{"cl sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", Limits{}, 400, DetailCodecError},
		{"cl negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"cl hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x1\r\n\r\nx", Limits{}, 400, DetailCodecError},
		{"cl empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", Limits{}, 400, DetailCodecError},
		{"cl overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"te gzip chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", Limits{}, 501, DetailInvalidTransferEncode},
		{"te chunked gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Limits{}, 501, DetailInvalidTransferEncode},
		{"te identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", Limits{}, 501, DetailInvalidTransferEncode},
		{"te xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", Limits{}, 501, DetailInvalidTransferEncode},
		{"te duplicate", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Limits{}, 501, DetailInvalidTransferEncode},
		{"te on connect", "CONNECT a:443 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", Limits{}, 501, DetailInvalidTransferEncode},
		{"connect with body", "CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", Limits{}, 400, DetailBodyDisallowed},
		{"nul in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", Limits{}, 400, DetailInvalidCharacters},
		{"cr in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", Limits{}, 400, DetailInvalidCharacters},
		{"ctl in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", Limits{}, 400, DetailInvalidCharacters},
		{"del in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", Limits{}, 400, DetailInvalidCharacters},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"bad name char", "GET / HTTP/1.1\r\nHost: a\r\nX(y): a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"obs fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  b\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"obs fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"bare lf", "GET / HTTP/1.1\nHost: a\n\n", Limits{}, 400, DetailCodecError},
		{"bare lf in header", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"too large", "GET / HTTP/1.1\r\nHost: a\r\nX: " + long + "\r\n\r\n", Limits{}, 431, DetailHeadersTooLarge},
		{"too large custom", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("b", 100) + "\r\n\r\n", Limits{MaxHeaderBytes: 64}, 431, DetailHeadersTooLarge},
		{"too many", "GET / HTTP/1.1\r\nHost: a\r\n" + many + "\r\n", Limits{}, 431, DetailTooManyHeaders},
		{"too many custom", "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", Limits{MaxHeaders: 2}, 431, DetailTooManyHeaders},
		{"no version", "GET /\r\nHost: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"bad version", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"lower version", "GET / http/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"bad method char", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Limits{AllowCustomMethods: true}, 400, DetailCodecError},
		{"unknown method", "FOO / HTTP/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"lowercase method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"leading crlf", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"no host", "GET / HTTP/1.1\r\n\r\n", Limits{}, 400, DetailMissingHost},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Limits{}, 400, DetailInvalidAuthority},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Limits{}, 400, DetailInvalidAuthority},
		{"http10 default", "GET / HTTP/1.0\r\n\r\n", Limits{}, 426, DetailLowVersion},
		{"http12", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", Limits{}, 426, DetailLowVersion},
		{"url with space char", "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"url non ascii", "GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"star not options", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailInvalidURL},
		{"absolute bad scheme", "GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailInvalidScheme},
		{"absolute no host", "GET http:///b HTTP/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailInvalidURL},
		{"absolute userinfo", "GET http://u@a/b HTTP/1.1\r\n\r\n", Limits{}, 400, DetailInvalidURL},
		{"connect no port", "CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", Limits{}, 400, DetailInvalidURL},
		{"chunk size not hex", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", Limits{}, 400, DetailCodecError},
		{"chunk size empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"chunk size overflow", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", Limits{}, 400, DetailCodecError},
		{"chunk size space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"chunk size bare lf", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"chunk ext ctl", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\x01\r\nx\r\n0\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"chunk ext lone cr", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\rb\r\nx\r\n0\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"chunk missing crlf", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"chunk lf only after data", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\n0\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"trailer obs fold", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n c\r\n\r\n", Limits{}, 400, DetailCodecError},
		{"trailer bad value", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: \x00\r\n\r\n", Limits{}, 400, DetailInvalidCharacters},
	}
	for _, tt := range tests {
		for _, slow := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				var d *Decoder
				if slow {
					d = NewDecoder(oneByteReader{strings.NewReader(tt.req)}, tt.lim)
				} else {
					d = NewDecoder(strings.NewReader(tt.req), tt.lim)
				}
				defer d.Release()
				p, err := readAll(d, "")
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("got %v (msg %+v headers %q body %q), want *Error", err, p.msg, p.fields, p.body)
				}
				if e.Status != tt.status || e.Details != tt.details {
					t.Fatalf("got %d %s (%v), want %d %s", e.Status, e.Details, e, tt.status, tt.details)
				}
				// The error is sticky: nothing more comes out.
				if _, err := d.ReadData(); err == nil {
					t.Fatal("ReadData after error succeeded")
				}
			})
		}
	}
}

func TestHTTP2Preface(t *testing.T) {
	d := NewDecoder(strings.NewReader("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Limits{})
	defer d.Release()
	_, err := readAll(d, "")
	var e *Error
	if !errors.As(err, &e) || !e.HTTP2Preface || e.Details != DetailCodecError {
		t.Fatalf("got %v, want HTTP/2 preface error", err)
	}
	// An ordinary protocol error is not a preface.
	_, err = decodeString("BAD\r\n\r\n", Limits{})
	if !errors.As(err, &e) || e.HTTP2Preface {
		t.Fatalf("got %v", err)
	}
}

func TestResponseRejected(t *testing.T) {
	tests := []struct {
		name, resp, method, details string
	}{
		{"cl and te", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", DetailChunkedContentLength},
		{"te gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", DetailInvalidTransferEncode},
		{"dup cl", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "GET", DetailCodecError},
		{"te on 204", "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", DetailTransferEncodingNotAll},
		{"cl on 204", "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", "GET", DetailContentLengthNotAll},
		{"cl on 100", "HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\n", "GET", DetailContentLengthNotAll},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", "GET", DetailCodecError},
		{"status 099", "HTTP/1.1 099 OK\r\n\r\n", "GET", DetailCodecError},
		{"not http", "XTTP/1.1 200 OK\r\n\r\n", "GET", DetailCodecError},
		{"bad value", "HTTP/1.1 200 OK\r\nX: \x00\r\nContent-Length: 0\r\n\r\n", "GET", DetailInvalidCharacters},
		{"obs fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", "GET", DetailCodecError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(strings.NewReader(tt.resp), Limits{})
			defer d.Release()
			_, err := readAll(d, tt.method)
			var e *Error
			if !errors.As(err, &e) || e.Status != 502 || e.Details != tt.details {
				t.Fatalf("got %v, want 502 %s", err, tt.details)
			}
		})
	}
}

func TestResponseBodyErrorIs502(t *testing.T) {
	d := NewDecoder(strings.NewReader("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), Limits{})
	defer d.Release()
	_, err := readAll(d, "GET")
	var e *Error
	if !errors.As(err, &e) || e.Status != 502 || e.Details != DetailCodecError {
		t.Fatalf("got %v", err)
	}
}

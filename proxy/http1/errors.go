package http1

import "fmt"

// Response code details, exactly as Envoy reports them in %RESPONSE_CODE_DETAILS%.
const (
	DetailCodecError             = "http1.codec_error"
	DetailInvalidCharacters      = "http1.invalid_characters"
	DetailHeadersTooLarge        = "http1.headers_too_large"
	DetailTooManyHeaders         = "http1.too_many_headers"
	DetailChunkedContentLength   = "http1.content_length_and_chunked_not_allowed"
	DetailInvalidTransferEncode  = "http1.invalid_transfer_encoding"
	DetailBodyDisallowed         = "http1.body_disallowed"
	DetailInvalidURL             = "http1.invalid_url"
	DetailInvalidScheme          = "http1.invalid_scheme"
	DetailTransferEncodingNotAll = "http1.transfer_encoding_not_allowed"
	DetailContentLengthNotAll    = "http1.content_length_not_allowed"
	DetailLowVersion             = "low_version"
	DetailMissingHost            = "missing_host_header"
	DetailInvalidAuthority       = "http.invalid_authority"
)

// Error is a protocol error found while decoding. A request that produced an
// Error must never be forwarded: the caller answers Status (with Details as the
// response code detail) and closes the connection.
//
// For errors decoding a response (ReadResponseHeaders and its body) Status is
// 502: the upstream sent garbage; Details is still Envoy's detail.
type Error struct {
	Status  int    // HTTP status to answer: 400, 413, 426, 431, 501, or 502 for responses
	Details string // Envoy's response code detail, e.g. "http1.codec_error"
	// HTTP2Preface is set when the bytes were the HTTP/2 connection preface
	// ("PRI * HTTP/2.0"); Details is then "http1.codec_error" as in Envoy,
	// and a protocol-sniffing caller switches to HTTP/2 instead of answering.
	HTTP2Preface bool
	msg          string // what exactly was wrong, for logs
}

func (e *Error) Error() string {
	return fmt.Sprintf("http1: %d %s: %s", e.Status, e.Details, e.msg)
}

func protoErr(status int, details, msg string) *Error {
	return &Error{Status: status, Details: details, msg: msg}
}

// Pre-built errors: returning them allocates nothing. Callers must not modify them.
var (
	errBareLF          = protoErr(400, DetailCodecError, "bare LF line ending")
	errLoneCR          = protoErr(400, DetailCodecError, "CR not followed by LF")
	errRequestLine     = protoErr(400, DetailCodecError, "malformed request line")
	errMethod          = protoErr(400, DetailCodecError, "invalid method")
	errVersion         = protoErr(400, DetailCodecError, "invalid HTTP version")
	errURL             = protoErr(400, DetailCodecError, "invalid request target")
	errObsFold         = protoErr(400, DetailCodecError, "obsolete line folding")
	errHeaderName      = protoErr(400, DetailCodecError, "invalid header name")
	errNoColon         = protoErr(400, DetailCodecError, "header line without colon")
	errHeaderValue     = protoErr(400, DetailInvalidCharacters, "header value contains invalid characters")
	errDupCL           = protoErr(400, DetailCodecError, "multiple content-length headers")
	errBadCL           = protoErr(400, DetailCodecError, "invalid content-length")
	errCLAndTE         = protoErr(400, DetailChunkedContentLength, "both content-length and transfer-encoding")
	errTE              = protoErr(501, DetailInvalidTransferEncode, "unsupported transfer-encoding")
	errTooLarge        = protoErr(431, DetailHeadersTooLarge, "headers size exceeds limit")
	errTrailersLarge   = protoErr(431, DetailHeadersTooLarge, "trailers size exceeds limit")
	errTooMany         = protoErr(431, DetailTooManyHeaders, "headers count exceeds limit")
	errMissingHost     = protoErr(400, DetailMissingHost, "HTTP/1.1 request without host")
	errDupHost         = protoErr(400, DetailInvalidAuthority, "multiple host headers")
	errAuthority       = protoErr(400, DetailInvalidAuthority, "invalid authority")
	errInvalidURL      = protoErr(400, DetailInvalidURL, "invalid absolute url")
	errInvalidScheme   = protoErr(400, DetailInvalidScheme, "invalid scheme")
	errLowVersion      = protoErr(426, DetailLowVersion, "HTTP/1.0 not accepted")
	errConnectBody     = protoErr(400, DetailBodyDisallowed, "CONNECT with a body")
	errChunkSize       = protoErr(400, DetailCodecError, "invalid chunk size")
	errChunkCRLF       = protoErr(400, DetailCodecError, "missing CRLF after chunk data")
	errChunkExt        = protoErr(400, DetailCodecError, "invalid chunk extension")
	errStatusLine      = protoErr(502, DetailCodecError, "malformed status line")
	errH2Preface       = &Error{Status: 400, Details: DetailCodecError, HTTP2Preface: true, msg: "HTTP/2 connection preface"}
	errRespTE1xx       = protoErr(502, DetailTransferEncodingNotAll, "transfer-encoding in 1xx or 204")
	errRespCL1xx       = protoErr(502, DetailContentLengthNotAll, "content-length in 1xx or 204")
	errBodyNotConsumed = fmt.Errorf("http1: previous message body not fully read")
	errReleased        = fmt.Errorf("http1: decoder used after Release")
)

// asResponse turns a request-side protocol error into its response-side form
// (Status 502, same details).
func asResponse(err error) error {
	e, ok := err.(*Error)
	if !ok || e.Status == 502 {
		return err
	}
	c := *e
	c.Status = 502
	return &c
}

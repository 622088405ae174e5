// Package formatter is Envoy's substitution formatter: a format string of
// plain text and %COMMAND(arg):len% operators compiled once into an immutable
// Formatter. Append renders it for one stream without allocating on the common
// path; a value that is unknown renders as "-" (access-log form) or as nothing
// (header-value form, Envoy's omit_empty_values used for headers_to_add).
package formatter

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// DefaultAccessLogFormat is Envoy's default access-log format string.
const DefaultAccessLogFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" " +
	"%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% " +
	"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% " +
	"\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" " +
	"\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n"

// Context is what one rendering reads. Every field may be nil; a command whose
// source is nil renders as a missing value.
type Context struct {
	Stream   *streaminfo.Stream
	Request  *headers.Map
	Response *headers.Map
	Trailers *headers.Map
	// LogType is the event being logged (DownstreamEnd, UpstreamEnd,
	// TcpConnectionEnd, ...); zero is NotSet. Access-log log_type_filter and
	// %ACCESS_LOG_TYPE% read it.
	LogType accesslogdatav3.AccessLogType
	// LocalReplyBody is the body of the local reply being formatted
	// (local_reply_config's body_format); %LOCAL_REPLY_BODY% renders it,
	// empty outside a local reply and never missing, as Envoy's.
	LocalReplyBody string
}

// Formatter is a compiled format string. It is immutable and safe for
// concurrent use.
type Formatter struct {
	parts     []part
	omitEmpty bool // header-value form: missing values render as "" instead of "-"
	static    string
	isStatic  bool
}

// kind is one operator, or plain text.
type kind uint8

const (
	kText kind = iota
	kReq
	kResp
	kTrailer
	kDownstreamRemoteAddr
	kDownstreamRemoteAddrNoPort
	kDownstreamRemotePort
	kDownstreamDirectRemoteAddr
	kDownstreamDirectRemoteAddrNoPort
	kDownstreamDirectRemotePort
	kDownstreamLocalAddr
	kDownstreamLocalAddrNoPort
	kDownstreamLocalPort
	kProtocol
	kStartTime
	kResponseCode
	kResponseCodeDetails
	kResponseFlags
	kBytesReceived
	kBytesSent
	kDuration
	kRequestDuration
	kResponseDuration
	kUpstreamHost
	kUpstreamCluster
	kUpstreamLocalAddr
	kUpstreamTransportFailureReason
	kConnectionTerminationDetails
	kRouteName
	kRequestedServerName
	kHostname
	kConnectionID
	kUpstreamAttemptCount
	kStreamID
	kAccessLogType
	kLocalReplyBody
)

// numeric reports whether k renders a number, which typed JSON keeps as a
// JSON number (Envoy's formatValue).
func (k kind) numeric() bool {
	switch k {
	case kResponseCode, kBytesReceived, kBytesSent, kDuration, kRequestDuration, kResponseDuration,
		kConnectionID, kUpstreamAttemptCount, kDownstreamRemotePort, kDownstreamDirectRemotePort,
		kDownstreamLocalPort:
		return true
	}
	return false
}

// part is one compiled piece. text holds literal text, the hostname, or the
// primary header name; alt the alternative header; maxLen truncates header
// values (0 = no limit); tf the START_TIME layout.
type part struct {
	kind   kind
	text   string
	alt    string
	maxLen int
	tf     *timeFormat
}

// simpleCommands are the operators without parameters.
var simpleCommands = map[string]kind{
	"DOWNSTREAM_REMOTE_ADDRESS":                     kDownstreamRemoteAddr,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":        kDownstreamRemoteAddrNoPort,
	"DOWNSTREAM_REMOTE_PORT":                        kDownstreamRemotePort,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS":              kDownstreamDirectRemoteAddr,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": kDownstreamDirectRemoteAddrNoPort,
	"DOWNSTREAM_DIRECT_REMOTE_PORT":                 kDownstreamDirectRemotePort,
	"DOWNSTREAM_LOCAL_ADDRESS":                      kDownstreamLocalAddr,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":         kDownstreamLocalAddrNoPort,
	"DOWNSTREAM_LOCAL_PORT":                         kDownstreamLocalPort,
	"PROTOCOL":                                      kProtocol,
	"RESPONSE_CODE":                                 kResponseCode,
	"RESPONSE_CODE_DETAILS":                         kResponseCodeDetails,
	"RESPONSE_FLAGS":                                kResponseFlags,
	"BYTES_RECEIVED":                                kBytesReceived,
	"BYTES_SENT":                                    kBytesSent,
	"DURATION":                                      kDuration,
	"REQUEST_DURATION":                              kRequestDuration,
	"RESPONSE_DURATION":                             kResponseDuration,
	"UPSTREAM_HOST":                                 kUpstreamHost,
	"UPSTREAM_CLUSTER":                              kUpstreamCluster,
	// UPSTREAM_CLUSTER_RAW is the cluster's name even when it has an
	// alt_stat_name; outrider's UPSTREAM_CLUSTER is already the name.
	"UPSTREAM_CLUSTER_RAW":              kUpstreamCluster,
	"UPSTREAM_LOCAL_ADDRESS":            kUpstreamLocalAddr,
	"UPSTREAM_TRANSPORT_FAILURE_REASON": kUpstreamTransportFailureReason,
	"CONNECTION_TERMINATION_DETAILS":    kConnectionTerminationDetails,
	"ROUTE_NAME":                        kRouteName,
	"REQUESTED_SERVER_NAME":             kRequestedServerName,
	"HOSTNAME":                          kHostname,
	"CONNECTION_ID":                     kConnectionID,
	"UPSTREAM_REQUEST_ATTEMPT_COUNT":    kUpstreamAttemptCount,
	"STREAM_ID":                         kStreamID,
	"ACCESS_LOG_TYPE":                   kAccessLogType,
	"LOCAL_REPLY_BODY":                  kLocalReplyBody,
}

// Compile parses format in Envoy's access-log form: a missing value renders
// as "-". The error names the offending command.
func Compile(format string) (*Formatter, error) { return compile(format, false) }

// CompileHeader parses format in Envoy's header-value form
// (request_headers_to_add and friends): a missing value renders as nothing,
// so an entirely missing value yields an empty string.
func CompileHeader(format string) (*Formatter, error) { return compile(format, true) }

// MustCompile is Compile that panics on error, for constants.
func MustCompile(format string) *Formatter {
	f, err := Compile(format)
	if err != nil {
		panic(err)
	}
	return f
}

func compile(format string, omitEmpty bool) (*Formatter, error) {
	f := &Formatter{omitEmpty: omitEmpty}
	var text strings.Builder
	flush := func() {
		if text.Len() > 0 {
			f.parts = append(f.parts, part{kind: kText, text: text.String()})
			text.Reset()
		}
	}
	for pos := 0; pos < len(format); {
		c := format[pos]
		if c != '%' {
			text.WriteByte(c)
			pos++
			continue
		}
		if pos+1 < len(format) && format[pos+1] == '%' {
			text.WriteByte('%')
			pos += 2
			continue
		}
		cmd, arg, maxLen, n, ok := scanCommand(format[pos:])
		if !ok {
			return nil, fmt.Errorf("incorrect configuration: %s. Couldn't find valid command at position %d", format, pos)
		}
		p, err := parseCommand(cmd, arg, maxLen)
		if err != nil {
			return nil, err
		}
		flush()
		f.parts = append(f.parts, p)
		pos += n
	}
	flush()
	f.isStatic = true
	for _, p := range f.parts {
		if p.kind != kText {
			f.isStatic = false
		}
	}
	if f.isStatic && len(f.parts) > 0 {
		f.static = f.parts[0].text
	}
	return f, nil
}

// scanCommand matches Envoy's `%([A-Z]|[0-9]|_)+(\([^\)]*\))?(:[0-9]+)?%` at
// the start of s. maxLen is -1 when absent; n is the bytes consumed.
func scanCommand(s string) (cmd, arg string, maxLen, n int, ok bool) {
	i := 1
	for i < len(s) && (s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9' || s[i] == '_') {
		i++
	}
	if i == 1 {
		return "", "", 0, 0, false
	}
	cmd = s[1:i]
	maxLen = -1
	if i < len(s) && s[i] == '(' {
		end := strings.IndexByte(s[i:], ')')
		if end < 0 {
			return "", "", 0, 0, false
		}
		arg = s[i+1 : i+end]
		i += end + 1
	}
	if i < len(s) && s[i] == ':' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i+1 {
			return "", "", 0, 0, false
		}
		v, err := strconv.Atoi(s[i+1 : j])
		if err != nil {
			return "", "", 0, 0, false
		}
		maxLen = v
		i = j
	}
	if i >= len(s) || s[i] != '%' {
		return "", "", 0, 0, false
	}
	return cmd, arg, maxLen, i + 1, true
}

func parseCommand(cmd, arg string, maxLen int) (part, error) {
	switch cmd {
	case "REQ", "RESP", "TRAILER":
		if arg == "" {
			return part{}, fmt.Errorf("%s requires parameters", cmd)
		}
		main, alt, more := strings.Cut(arg, "?")
		if more && strings.Contains(alt, "?") {
			return part{}, fmt.Errorf("more than 1 alternative header specified in token: %s", arg)
		}
		if strings.ContainsAny(arg, "\r\n\x00") {
			return part{}, fmt.Errorf("invalid header configuration. Format string contains newline")
		}
		k := map[string]kind{"REQ": kReq, "RESP": kResp, "TRAILER": kTrailer}[cmd]
		p := part{kind: k, text: strings.ToLower(main), alt: strings.ToLower(alt)}
		if maxLen >= 0 {
			p.maxLen = maxLen
			if maxLen == 0 {
				p.maxLen = -1 // explicit zero length: always empty
			}
		}
		return p, nil
	case "START_TIME":
		if maxLen >= 0 {
			return part{}, fmt.Errorf("START_TIME does not allow length to be specified")
		}
		tf, err := compileTimeFormat(arg)
		if err != nil {
			return part{}, fmt.Errorf("START_TIME(%s): %w", arg, err)
		}
		return part{kind: kStartTime, tf: tf}, nil
	}
	if p, ok, err := parseTLSCommand(cmd, arg, maxLen); ok {
		return p, err
	}
	k, ok := simpleCommands[cmd]
	if !ok {
		return part{}, fmt.Errorf("not supported field in StreamInfo: %s", cmd)
	}
	if arg != "" || maxLen >= 0 {
		return part{}, fmt.Errorf("%s does not take any parameters or length", cmd)
	}
	p := part{kind: k}
	if k == kHostname {
		h, err := os.Hostname()
		if err == nil {
			p.text = h
		}
	}
	return p, nil
}

// IsStatic reports whether the format has no operators: its output is always
// the same text.
func (f *Formatter) IsStatic() bool { return f.isStatic }

// StaticValue is the text of a static formatter ("" otherwise).
func (f *Formatter) StaticValue() string { return f.static }

// Format is Append into a new string. It allocates.
func (f *Formatter) Format(ctx *Context) string { return string(f.Append(nil, ctx)) }

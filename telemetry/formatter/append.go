package formatter

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// Append renders f for ctx onto dst and returns the extended slice. ctx may
// be nil. Plain text and the usual commands do not allocate.
func (f *Formatter) Append(dst []byte, ctx *Context) []byte {
	if ctx == nil {
		ctx = &Context{}
	}
	for i := range f.parts {
		p := &f.parts[i]
		if p.kind == kText {
			dst = append(dst, p.text...)
			continue
		}
		n := len(dst)
		var ok bool
		dst, ok = f.appendPart(dst, p, ctx)
		if !ok {
			dst = dst[:n]
			if !f.omitEmpty {
				dst = append(dst, '-')
			}
		}
	}
	return dst
}

// ValueType is the JSON type of a value rendered by AppendValue.
type ValueType uint8

const (
	// ValueMissing: the single operator had no value; nothing was appended
	// (typed JSON renders null).
	ValueMissing ValueType = iota
	// ValueString: the appended bytes are text, not yet JSON-escaped.
	ValueString
	// ValueNumber: the appended bytes are a decimal number.
	ValueNumber
)

// AppendValue renders f as one typed value, as Envoy's structured formatters
// do: a format that is exactly one operator yields that operator's value
// unchanged (a number for counts, codes, durations and ports; ValueMissing
// when unknown, with nothing appended); any other format renders as Append
// does and is a ValueString.
func (f *Formatter) AppendValue(dst []byte, ctx *Context) ([]byte, ValueType) {
	if len(f.parts) != 1 || f.parts[0].kind == kText {
		return f.Append(dst, ctx), ValueString
	}
	if ctx == nil {
		ctx = &Context{}
	}
	p := &f.parts[0]
	n := len(dst)
	dst, ok := f.appendPart(dst, p, ctx)
	if !ok {
		return dst[:n], ValueMissing
	}
	if p.kind.numeric() {
		return dst, ValueNumber
	}
	return dst, ValueString
}

// appendPart renders one operator; ok=false means the value is missing.
func (f *Formatter) appendPart(dst []byte, p *part, ctx *Context) ([]byte, bool) {
	s := ctx.Stream
	switch p.kind {
	case kReq:
		return appendHeader(dst, ctx.Request, p)
	case kResp:
		return appendHeader(dst, ctx.Response, p)
	case kTrailer:
		return appendHeader(dst, ctx.Trailers, p)
	case kHostname:
		return append(dst, p.text...), p.text != ""
	case kAccessLogType:
		return append(dst, ctx.LogType.String()...), true
	case kLocalReplyBody:
		return append(dst, ctx.LocalReplyBody...), true
	}
	if s == nil {
		return dst, false
	}
	c := s.Conn
	if p.kind >= kPeerURISAN {
		return appendTLS(dst, p, c)
	}
	switch p.kind {
	case kDownstreamRemoteAddr, kDownstreamRemoteAddrNoPort, kDownstreamRemotePort,
		kDownstreamDirectRemoteAddr, kDownstreamDirectRemoteAddrNoPort, kDownstreamDirectRemotePort,
		kDownstreamLocalAddr, kDownstreamLocalAddrNoPort, kDownstreamLocalPort:
		if c == nil {
			return dst, false
		}
		return appendAddr(dst, c.RemoteAddr, c.DirectRemoteAddr, c.LocalAddr, p.kind)
	case kProtocol:
		return appendStr(dst, s.Protocol)
	case kStartTime:
		if s.StartTime.IsZero() {
			return dst, false
		}
		return p.tf.append(dst, s.StartTime), true
	case kResponseCode:
		return strconv.AppendInt(dst, int64(s.ResponseCode), 10), true
	case kResponseCodeDetails:
		return appendStr(dst, s.ResponseCodeDetails)
	case kResponseFlags:
		return appendFlags(dst, s.Flags), true
	case kBytesReceived:
		return strconv.AppendUint(dst, s.BytesReceived, 10), true
	case kBytesSent:
		return strconv.AppendUint(dst, s.BytesSent, 10), true
	case kDuration:
		return appendMillis(dst, s.LastDownstreamTxByte)
	case kRequestDuration:
		return appendMillis(dst, s.LastDownstreamRxByte)
	case kResponseDuration:
		return appendMillis(dst, s.FirstUpstreamRxByte)
	case kUpstreamHost:
		if !s.UpstreamHost.IsValid() {
			return dst, false
		}
		return s.UpstreamHost.AppendTo(dst), true
	case kUpstreamCluster:
		return appendStr(dst, s.UpstreamCluster)
	case kUpstreamLocalAddr:
		return appendStr(dst, s.UpstreamLocalAddr)
	case kUpstreamTransportFailureReason:
		return appendStr(dst, s.UpstreamTransportFailureReason)
	case kConnectionTerminationDetails:
		// Envoy fills it only when a network filter closes the connection
		// for an L4 reason of its own (e.g. an RBAC denial); outrider's
		// filters record none, so it is always "-".
		return dst, false
	case kRouteName:
		return appendStr(dst, s.RouteName)
	case kRequestedServerName:
		if c == nil {
			return dst, false
		}
		return appendStr(dst, c.RequestedServerName)
	case kConnectionID:
		if c == nil {
			return dst, false
		}
		return strconv.AppendUint(dst, c.ID, 10), true
	case kUpstreamAttemptCount:
		// Stream does not count attempts; a stream that reached an upstream
		// made at least one.
		if !s.UpstreamHost.IsValid() && s.UpstreamCluster == "" {
			return append(dst, '0'), true
		}
		return append(dst, '1'), true
	case kStreamID:
		return appendStr(dst, s.RequestID)
	}
	return dst, false
}

func appendStr(dst []byte, v string) ([]byte, bool) {
	return append(dst, v...), v != ""
}

func appendMillis(dst []byte, d time.Duration) ([]byte, bool) {
	if d <= 0 {
		return dst, false
	}
	return strconv.AppendInt(dst, d.Milliseconds(), 10), true
}

func appendFlags(dst []byte, f interface{ String() string }) []byte {
	return append(dst, f.String()...)
}

// appendHeader renders the first value of the main header, else of the
// alternative one, truncated to maxLen.
func appendHeader(dst []byte, m *headers.Map, p *part) ([]byte, bool) {
	if m == nil {
		return dst, false
	}
	v, ok := m.Get(p.text)
	if !ok && p.alt != "" {
		v, ok = m.Get(p.alt)
	}
	if !ok {
		return dst, false
	}
	switch {
	case p.maxLen < 0:
		v = v[:0]
	case p.maxLen > 0 && len(v) > p.maxLen:
		v = v[:p.maxLen]
	}
	return append(dst, v...), true
}

func appendAddr(dst []byte, remote, direct, local netip.AddrPort, k kind) ([]byte, bool) {
	var a netip.AddrPort
	withAddr, withPort := true, true
	switch k {
	case kDownstreamRemoteAddr:
		a = remote
	case kDownstreamRemoteAddrNoPort:
		a, withPort = remote, false
	case kDownstreamRemotePort:
		a, withAddr = remote, false
	case kDownstreamDirectRemoteAddr:
		a = direct
	case kDownstreamDirectRemoteAddrNoPort:
		a, withPort = direct, false
	case kDownstreamDirectRemotePort:
		a, withAddr = direct, false
	case kDownstreamLocalAddr:
		a = local
	case kDownstreamLocalAddrNoPort:
		a, withPort = local, false
	case kDownstreamLocalPort:
		a, withAddr = local, false
	}
	if !a.IsValid() {
		return dst, false
	}
	switch {
	case withAddr && withPort:
		return a.AppendTo(dst), true
	case withAddr:
		return a.Addr().AppendTo(dst), true
	default:
		return strconv.AppendUint(dst, uint64(a.Port()), 10), true
	}
}

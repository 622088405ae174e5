package router

import (
	"strconv"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// applyMaxStreamDuration reads the route's max_stream_duration: its
// max_stream_duration bounds the whole stream from its start, and for gRPC
// requests grpc_timeout_header_max makes the client's grpc-timeout (capped;
// 0 means no cap, minus grpc_timeout_header_offset) the route timeout, as
// Envoy does. The upstream is told the budget in grpc-timeout.
func (f *filter) applyMaxStreamDuration(h *headers.Map) {
	f.maxStream = time.Time{}
	msd := f.route.MaxStreamDuration()
	if msd == nil {
		return
	}
	if d := msd.GetMaxStreamDuration().AsDuration(); d > 0 {
		f.maxStream = f.cb.Info().StartTime.Add(d)
	}
	ct, _ := h.Get("content-type")
	if msd.GetGrpcTimeoutHeaderMax() == nil || !headers.IsGRPC(ct) {
		return
	}
	v, ok := h.Get("grpc-timeout")
	if !ok {
		return
	}
	t, ok := parseGRPCTimeout(v)
	if !ok {
		return
	}
	if max := msd.GetGrpcTimeoutHeaderMax().AsDuration(); max > 0 && t > max {
		t = max
	}
	if off := msd.GetGrpcTimeoutHeaderOffset().AsDuration(); off > 0 && t > off {
		t -= off
	}
	f.timeout = t
	var b [24]byte
	h.SetBytes("grpc-timeout", append(strconv.AppendInt(b[:0], max(t.Milliseconds(), 1), 10), 'm'))
}

// capByMaxStream returns the earlier of d (zero: none) and the end of the
// stream's max_stream_duration.
func (f *filter) capByMaxStream(d time.Time) time.Time {
	if !f.maxStream.IsZero() && (d.IsZero() || f.maxStream.Before(d)) {
		return f.maxStream
	}
	return d
}

// parseGRPCTimeout parses gRPC's TimeoutValue TimeoutUnit (at most 8
// digits, then H, M, S, m, u or n).
func parseGRPCTimeout(v []byte) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v[:len(v)-1]), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

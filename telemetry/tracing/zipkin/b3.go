package zipkin

import (
	"bytes"
	"encoding/hex"
	"strconv"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// spanContext is a B3 context: a 64- or 128-bit trace id, the span id, its
// parent (0: none) and the sampling state (sampledSet: the sender decided).
type spanContext struct {
	traceHigh, traceLow uint64
	id, parent          uint64
	sampled, sampledSet bool
}

func parseID(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b), 16, 64)
	return v, err == nil
}

// parseTraceID parses a 16 or 32 hex digit trace id.
func parseTraceID(b []byte) (hi, lo uint64, ok bool) {
	switch len(b) {
	case 32:
		if hi, ok = parseID(b[:16]); !ok {
			return 0, 0, false
		}
		lo, ok = parseID(b[16:])
		return hi, lo, ok
	case 16:
		lo, ok = parseID(b)
		return 0, lo, ok
	}
	return 0, 0, false
}

func parseSampled(b []byte) (sampled, ok bool) {
	switch string(b) {
	case "1", "true", "d":
		return true, true
	case "0", "false":
		return false, true
	}
	return false, false
}

// extract reads the B3 context from h: the single b3 header first, then
// the x-b3-* headers. ok is false when h carries no (valid) trace and span
// id; a lone sampling decision (b3: 0, x-b3-sampled) is still returned.
func extract(h *headers.Map) (c spanContext, ok bool) {
	if v, has := h.Get("b3"); has {
		parts := bytes.Split(v, []byte{'-'})
		if len(parts) == 1 { // sampling state only
			c.sampled, c.sampledSet = parseSampled(parts[0])
			return c, false
		}
		if len(parts) > 4 {
			return spanContext{}, false
		}
		var okT, okS bool
		c.traceHigh, c.traceLow, okT = parseTraceID(parts[0])
		c.id, okS = parseID(parts[1])
		if !okT || !okS {
			return spanContext{}, false
		}
		if len(parts) > 2 {
			c.sampled, c.sampledSet = parseSampled(parts[2])
		}
		if len(parts) > 3 {
			c.parent, _ = parseID(parts[3])
		}
		return c, true
	}
	if v, has := h.Get("x-b3-flags"); has && string(v) == "1" {
		c.sampled, c.sampledSet = true, true // debug implies sampled
	} else if v, has := h.Get("x-b3-sampled"); has {
		c.sampled, c.sampledSet = parseSampled(v)
	}
	tid, hasT := h.Get("x-b3-traceid")
	sid, hasS := h.Get("x-b3-spanid")
	if !hasT || !hasS {
		return c, false
	}
	var okT, okS bool
	c.traceHigh, c.traceLow, okT = parseTraceID(tid)
	c.id, okS = parseID(sid)
	if !okT || !okS {
		return spanContext{sampled: c.sampled, sampledSet: c.sampledSet}, false
	}
	if p, has := h.Get("x-b3-parentspanid"); has {
		c.parent, _ = parseID(p)
	}
	return c, true
}

func appendHex64(dst []byte, v uint64) []byte {
	var b [8]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (56 - 8*i))
	}
	return hex.AppendEncode(dst, b[:])
}

func (c *spanContext) traceID() string {
	var b []byte
	if c.traceHigh != 0 {
		b = appendHex64(b, c.traceHigh)
	}
	return string(appendHex64(b, c.traceLow))
}

// inject writes the x-b3-* headers, as Envoy's Zipkin tracer does.
func (c *spanContext) inject(h *headers.Map) {
	h.Set("x-b3-traceid", c.traceID())
	h.SetBytes("x-b3-spanid", appendHex64(nil, c.id))
	if c.parent != 0 {
		h.SetBytes("x-b3-parentspanid", appendHex64(nil, c.parent))
	} else {
		h.Del("x-b3-parentspanid")
	}
	if c.sampled {
		h.Set("x-b3-sampled", "1")
	} else {
		h.Set("x-b3-sampled", "0")
	}
}

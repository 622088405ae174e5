package zipkin

import (
	"bytes"
	"encoding/hex"
	"errors"
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

// parseSampled reads the b3 header's sampling state: 0, 1 or d (debug).
func parseSampled(b []byte) (sampled, ok bool) {
	switch string(b) {
	case "1", "d":
		return true, true
	case "0":
		return false, true
	}
	return false, false
}

// errMalformed is a B3 context that is present but does not parse: Envoy
// then traces nothing for the request (a null span).
var errMalformed = errors.New("malformed B3 context")

// extract reads the B3 context from h, as Envoy's SpanContextExtractor: the
// single b3 header first, then x-b3-traceid and x-b3-spanid (with
// x-b3-parentspanid). found is false when h carries no trace and span id;
// a sampling decision alone (b3: 0, x-b3-sampled) is still returned. A
// context that is there but malformed is errMalformed.
func extract(h *headers.Map) (c spanContext, found bool, err error) {
	if v, has := h.Get("b3"); has {
		parts := bytes.Split(v, []byte{'-'})
		if len(parts) == 1 { // sampling state only
			c.sampled, c.sampledSet = parseSampled(parts[0])
			if !c.sampledSet {
				return spanContext{}, false, errMalformed
			}
			return c, false, nil
		}
		if len(parts) > 4 {
			return spanContext{}, false, errMalformed
		}
		var okT, okS bool
		c.traceHigh, c.traceLow, okT = parseTraceID(parts[0])
		c.id, okS = parseID(parts[1])
		if !okT || !okS || len(parts[1]) != 16 {
			return spanContext{}, false, errMalformed
		}
		if len(parts) > 2 {
			if c.sampled, c.sampledSet = parseSampled(parts[2]); !c.sampledSet || len(parts[2]) != 1 {
				return spanContext{}, false, errMalformed
			}
		}
		if len(parts) > 3 {
			var ok bool
			if c.parent, ok = parseID(parts[3]); !ok || len(parts[3]) != 16 {
				return spanContext{}, false, errMalformed
			}
		}
		return c, true, nil
	}
	if v, has := h.Get("x-b3-sampled"); has {
		// "true" is what some old Zipkin tracers send.
		c.sampled, c.sampledSet = string(v) == "1" || string(v) == "true", true
	}
	tid, hasT := h.Get("x-b3-traceid")
	sid, hasS := h.Get("x-b3-spanid")
	if !hasT || !hasS {
		return c, false, nil
	}
	var okT, okS bool
	c.traceHigh, c.traceLow, okT = parseTraceID(tid)
	c.id, okS = parseID(sid)
	if !okT || !okS {
		return spanContext{}, false, errMalformed
	}
	if p, has := h.Get("x-b3-parentspanid"); has {
		var ok bool
		if c.parent, ok = parseID(p); !ok {
			return spanContext{}, false, errMalformed
		}
	}
	return c, true, nil
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

package tracing

import (
	"math/rand/v2"
	"strconv"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// TraceStatus is the trace reason Envoy's UUID request id extension packs
// into x-request-id: the character at position 14 (the UUID version nibble).
type TraceStatus byte

// Envoy's values for the version nibble.
const (
	NoTrace TraceStatus = '4' // a fresh UUIDv4: not traced
	Sampled TraceStatus = '9' // random_sampling picked it
	Forced  TraceStatus = 'a' // x-envoy-force-trace
	Client  TraceStatus = 'b' // x-client-trace-id and client_sampling
)

const traceBytePos = 14

// uuidLike reports whether id has the 8-4-4-4-12 shape Envoy requires
// before reading or writing the trace status.
func uuidLike(id []byte) bool {
	return len(id) == 36 && id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-'
}

// GetTraceStatus reads the trace status from h's x-request-id; a missing or
// non-UUID id is NoTrace. Envoy reads only the known reasons; anything else
// (another UUID version) is NoTrace as well.
func GetTraceStatus(h *headers.Map) TraceStatus {
	id, _ := h.Get("x-request-id")
	if !uuidLike(id) {
		return NoTrace
	}
	switch s := TraceStatus(id[traceBytePos]); s {
	case Sampled, Forced, Client:
		return s
	}
	return NoTrace
}

// SetTraceStatus writes s into h's x-request-id, when it is a UUID.
func SetTraceStatus(h *headers.Map, s TraceStatus) {
	id, _ := h.Get("x-request-id")
	if !uuidLike(id) {
		return
	}
	if TraceStatus(id[traceBytePos]) == s {
		return
	}
	b := make([]byte, len(id))
	copy(b, id)
	b[traceBytePos] = byte(s)
	h.SetBytes("x-request-id", b)
}

// RequestIDInteger is the integer sampling uses: the first 8 hex digits of
// x-request-id, as Envoy's UUID extension computes it.
func RequestIDInteger(h *headers.Map) (uint64, bool) {
	id, _ := h.Get("x-request-id")
	if len(id) < 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(id[:8]), 16, 64)
	return v, err == nil
}

// Sampling holds the three sampling percentages as numerators over 10000
// (Envoy converts the HCM's Percent values to TEN_THOUSAND fractions).
type Sampling struct {
	Client, Random, Overall uint32
}

// FullSampling is Envoy's default: 100% everywhere.
var FullSampling = Sampling{Client: 10000, Random: 10000, Overall: 10000}

// PercentToTenThousand converts a Percent value (0..100) to a numerator
// over 10000.
func PercentToTenThousand(p float64) uint32 {
	if p <= 0 {
		return 0
	}
	if p >= 100 {
		return 10000
	}
	return uint32(p * 100)
}

// MutateTraceStatus applies Envoy's sampling to the request's x-request-id
// (ConnectionManagerUtility::mutateTracingRequestHeader): a request already
// traced keeps its status; else x-client-trace-id (client_sampling),
// x-envoy-force-trace, then random_sampling decide; overall_sampling can
// still turn tracing off. It returns the decision.
func MutateTraceStatus(h *headers.Map, s Sampling) Decision {
	n, ok := RequestIDInteger(h)
	if !ok {
		return Decision{Traced: GetTraceStatus(h) != NoTrace}
	}
	result := uint32(n % 10000)
	if GetTraceStatus(h) == NoTrace {
		switch {
		case h.Has("x-client-trace-id") && enabled(s.Client, rand.Uint32N(10000)):
			SetTraceStatus(h, Client)
		case h.Has("x-envoy-force-trace"):
			SetTraceStatus(h, Forced)
		case enabled(s.Random, result):
			SetTraceStatus(h, Sampled)
		}
	}
	if !enabled(s.Overall, result) {
		SetTraceStatus(h, NoTrace)
	}
	return Decision{Traced: GetTraceStatus(h) != NoTrace}
}

// enabled is Envoy's featureEnabled over a TEN_THOUSAND fraction: the
// client percentage uses a random value; the others the request id's.
func enabled(numerator, value uint32) bool { return value < numerator }

package tracing

import (
	"math/rand/v2"
	"strconv"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

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

// Fraction is a sampling fraction: Num out of Den (Den 0 is treated as
// 100, as FractionalPercent's HUNDRED default).
type Fraction struct{ Num, Den uint32 }

// enabled is Envoy's featureEnabled over a fraction and a value: value
// modulo the denominator below the numerator.
func (f Fraction) enabled(value uint64) bool {
	den := f.Den
	if den == 0 {
		den = 100
	}
	return uint32(value%uint64(den)) < f.Num
}

// FromFractional converts a FractionalPercent; nil is def.
func FromFractional(p *typev3.FractionalPercent, def Fraction) Fraction {
	if p == nil {
		return def
	}
	den := uint32(100)
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10000
	case typev3.FractionalPercent_MILLION:
		den = 1000000
	}
	return Fraction{Num: min(p.GetNumerator(), den), Den: den}
}

// FromPercent converts a Percent (0..100) to a fraction over 10000, as
// Envoy converts the connection manager's sampling fields; nil is 100%.
func FromPercent(p *typev3.Percent) Fraction {
	if p == nil {
		return Fraction{Num: 10000, Den: 10000}
	}
	v := p.GetValue()
	switch {
	case v <= 0:
		return Fraction{Num: 0, Den: 10000}
	case v >= 100:
		return Fraction{Num: 10000, Den: 10000}
	}
	return Fraction{Num: uint32(v * 100), Den: 10000}
}

// Sampling holds the three sampling fractions of a connection manager (or
// a route's override).
type Sampling struct {
	Client, Random, Overall Fraction
}

// FullSampling is Envoy's default: 100% everywhere.
var FullSampling = Sampling{Client: Fraction{10000, 10000}, Random: Fraction{10000, 10000}, Overall: Fraction{10000, 10000}}

// Reason is why a request is traced or not (Envoy's Tracing::Reason).
type Reason int

// The reasons the connection manager counts (tracing.* stats).
const (
	NotTraceable   Reason = iota // no-trace status, or no usable x-request-id
	RandomSampling               // random_sampling
	ServiceForced                // x-envoy-force-trace
	ClientForced                 // x-client-trace-id
)

func decisionOf(s TraceStatus) Decision {
	switch s {
	case Sampled:
		return Decision{Traced: true, Reason: RandomSampling}
	case Forced:
		return Decision{Traced: true, Reason: ServiceForced}
	case Client:
		return Decision{Traced: true, Reason: ClientForced}
	}
	return Decision{Reason: NotTraceable}
}

// MutateTraceStatus applies Envoy's sampling to the request's x-request-id
// (ConnectionManagerUtility::mutateTracingRequestHeader): a request already
// traced keeps its status; else x-client-trace-id (client_sampling),
// x-envoy-force-trace, then random_sampling decide; overall_sampling can
// still turn tracing off. It returns the decision.
func MutateTraceStatus(h *headers.Map, s Sampling) Decision {
	n, ok := RequestIDInteger(h)
	if !ok {
		return decisionOf(GetTraceStatus(h))
	}
	result := n % 10000
	if GetTraceStatus(h) == NoTrace {
		switch {
		case h.Has("x-client-trace-id") && s.Client.enabled(rand.Uint64N(10000)):
			SetTraceStatus(h, Client)
		case h.Has("x-envoy-force-trace"):
			SetTraceStatus(h, Forced)
		case s.Random.enabled(result):
			SetTraceStatus(h, Sampled)
		}
	}
	if !s.Overall.enabled(result) {
		SetTraceStatus(h, NoTrace)
	}
	return decisionOf(GetTraceStatus(h))
}

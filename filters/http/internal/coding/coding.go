// Package coding is what the compressor and decompressor filters and their
// libraries share: a library config's decoding and chunk_size, the
// directions' runtime feature flag, and the rewritten body pieces each
// filter hands the connection manager. It decides nothing about codings
// itself; each filter keeps Envoy's rules for when to code a body.
package coding

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/runtime"
)

// Decode unmarshals a library's typed_config a into m (a nil a leaves m at
// its defaults) and refuses the fields of m not named in supported.
func Decode(a *anypb.Any, m proto.Message, supported ...string) error {
	if err := httpfilter.UnmarshalConfig(a, m); err != nil {
		return err
	}
	return confcheck.Fields(m, "", supported...)
}

// ChunkSize is a library's chunk_size: 4096 when v is nil, else v within
// Envoy's [4096, 65536].
func ChunkSize(v *wrapperspb.UInt32Value) (int, error) {
	if v == nil {
		return 4096, nil
	}
	if v.GetValue() < 4096 || v.GetValue() > 65536 {
		return 0, fmt.Errorf("chunk_size: %d not in [4096, 65536]", v.GetValue())
	}
	return int(v.GetValue()), nil
}

// Enabled is Envoy's Runtime::FeatureFlag f in the process's runtime: a nil
// f is on, a nil default_value is true, and without a runtime_key the
// default stands.
func Enabled(f *corev3.RuntimeFeatureFlag) bool {
	if f == nil {
		return true
	}
	def := f.GetDefaultValue() == nil || f.GetDefaultValue().GetValue()
	if f.GetRuntimeKey() == "" {
		return def
	}
	return runtime.Process().GetBool(f.GetRuntimeKey(), def)
}

// Body is a filter's two bodies, the request's and the response's, each
// with its coder C (a compressor or decompressor; nil: the body passes as it
// is), whether the body has ended, and the last piece the coder produced
// until the connection manager takes it. The zero value codes nothing.
type Body[C interface {
	comparable
	Release()
}] struct {
	coder        [2]C
	out          [2][]byte
	fresh, ended [2]bool
}

func dir(encode bool) int {
	if encode {
		return 1
	}
	return 0
}

// Start codes the direction's body with c from now on.
func (b *Body[C]) Start(encode bool, c C) { b.coder[dir(encode)] = c }

// Code passes a piece p of the direction's body (end: its last) through
// code with the direction's coder and keeps the output for Rewritten; once
// the body has ended, or without a coder, it does nothing.
func (b *Body[C]) Code(encode bool, p []byte, end bool, code func(c C, encode bool, p []byte, end bool) []byte) {
	d := dir(encode)
	var zero C
	if b.coder[d] == zero || b.ended[d] {
		return
	}
	b.out[d], b.fresh[d], b.ended[d] = code(b.coder[d], encode, p, end), true, end
}

// Rewritten hands the connection manager the direction's coded piece once:
// ok is false when nothing was coded since it was last taken.
func (b *Body[C]) Rewritten(encode bool) ([]byte, bool) {
	d := dir(encode)
	p, ok := b.out[d], b.fresh[d]
	b.out[d], b.fresh[d] = nil, false
	return p, ok
}

// Release gives both coders back; their last output may still be on its
// way until the stream is over, so a filter releases them only then.
func (b *Body[C]) Release() {
	var zero C
	for d, c := range b.coder {
		if c != zero {
			c.Release()
			b.coder[d] = zero
		}
	}
}

// Reset releases the coders and forgets both bodies, for the filter's next
// stream.
func (b *Body[C]) Reset() {
	b.Release()
	*b = Body[C]{}
}

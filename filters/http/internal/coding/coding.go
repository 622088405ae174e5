// Package coding is what the compressor and decompressor libraries share: a
// library config's decoding and its chunk_size. It decides nothing about codings
// itself; each filter keeps Envoy's rules for when to code a body.
package coding

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
)

// Decode unmarshals a library's typed_config a into m (a nil a leaves m at
// its defaults) and refuses the fields of m not named in supported.
func Decode(a *anypb.Any, m proto.Message, supported ...string) error {
	if a != nil {
		if err := a.UnmarshalTo(m); err != nil {
			return fmt.Errorf("typed_config: %w", err)
		}
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

package coding_test

import (
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
)

// upper is a coder that upper-cases and counts its releases.
type upper struct{ released *int }

func (u *upper) Release() { *u.released++ }

func code(c *upper, encode bool, p []byte, end bool) []byte {
	return []byte(fmt.Sprintf("%v:%s:%v", encode, strings.ToUpper(string(p)), end))
}

func TestBody(t *testing.T) {
	var b coding.Body[*upper]
	released := 0
	b.Code(false, []byte("a"), false, code) // no coder yet: nothing
	b.Start(true, &upper{&released})
	b.Code(true, []byte("x"), false, code)
	b.Code(false, []byte("a"), false, code)
	steps := []struct {
		encode bool
		want   string
		ok     bool
	}{{false, "", false}, {true, "true:X:false", true}, {true, "", false}}
	for i, s := range steps {
		if p, ok := b.Rewritten(s.encode); string(p) != s.want || ok != s.ok {
			t.Fatalf("step %d: Rewritten(%v) = %q %v, want %q %v", i, s.encode, p, ok, s.want, s.ok)
		}
	}
	b.Code(true, nil, true, code)
	b.Code(true, []byte("after the end"), false, code)
	if p, ok := b.Rewritten(true); string(p) != "true::true" || !ok {
		t.Fatalf("last piece %q %v", p, ok)
	}
	b.Release()
	b.Release()
	if released != 1 {
		t.Fatalf("released %d times, want 1", released)
	}
	b.Start(false, &upper{&released})
	b.Reset()
	if released != 2 {
		t.Fatalf("Reset released %d, want 2 in all", released)
	}
	b.Code(false, []byte("a"), false, code)
	if _, ok := b.Rewritten(false); ok {
		t.Fatal("a piece after Reset without a coder")
	}
}

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    *corev3.RuntimeFeatureFlag
		want bool
	}{
		{"nil", nil, true},
		{"no default", &corev3.RuntimeFeatureFlag{}, true},
		{"default false", &corev3.RuntimeFeatureFlag{DefaultValue: wrapperspb.Bool(false)}, false},
		{"unset runtime key keeps the default", &corev3.RuntimeFeatureFlag{DefaultValue: wrapperspb.Bool(false), RuntimeKey: "coding_test.unset"}, false},
	} {
		if got := coding.Enabled(tc.f); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestChunkSizeAndDecode(t *testing.T) {
	for _, tc := range []struct {
		v    *wrapperspb.UInt32Value
		want int
		err  string
	}{
		{nil, 4096, ""},
		{wrapperspb.UInt32(65536), 65536, ""},
		{wrapperspb.UInt32(4095), 0, "chunk_size: 4095 not in [4096, 65536]"},
	} {
		got, err := coding.ChunkSize(tc.v)
		if got != tc.want || fmt.Sprint(err) != map[bool]string{true: "<nil>", false: tc.err}[tc.err == ""] {
			t.Errorf("ChunkSize(%v) = %d, %v; want %d, %q", tc.v, got, err, tc.want, tc.err)
		}
	}
	a, _ := anypb.New(&gzipv3.Gzip{ChunkSize: wrapperspb.UInt32(8192), MemoryLevel: wrapperspb.UInt32(3)})
	m := &gzipv3.Gzip{}
	if err := coding.Decode(a, m, "chunk_size", "memory_level"); err != nil || m.GetChunkSize().GetValue() != 8192 {
		t.Fatalf("Decode: %v, chunk_size %d", err, m.GetChunkSize().GetValue())
	}
	if err := coding.Decode(a, &gzipv3.Gzip{}, "chunk_size"); err == nil || !strings.Contains(err.Error(), "memory_level") {
		t.Fatalf("Decode with memory_level unsupported: %v", err)
	}
	wrong, _ := anypb.New(durationpb.New(0))
	if err := coding.Decode(wrong, &gzipv3.Gzip{}); err == nil || !strings.HasPrefix(err.Error(), "typed_config: ") {
		t.Fatalf("Decode of another type: %v", err)
	}
	if err := coding.Decode(nil, &gzipv3.Gzip{}); err != nil {
		t.Fatalf("Decode(nil): %v", err)
	}
}

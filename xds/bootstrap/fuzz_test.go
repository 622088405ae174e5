package bootstrap

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzLoadBytes checks that LoadBytes never panics, that errors are one
// line naming the file, and that whatever loads survives a JSON round trip
// (JSON then LoadBytes again) unchanged.
func FuzzLoadBytes(f *testing.F) {
	f.Add("envoy.yaml", []byte(minimalYAML))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		b, err := LoadBytes(name, data)
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Fatalf("multi-line error: %q", msg)
			}
			if !strings.HasPrefix(msg, name) {
				t.Fatalf("error does not name the file %q: %q", name, msg)
			}
			return
		}
		js, err := JSON(b)
		if err != nil {
			t.Fatalf("JSON of a loaded bootstrap: %v", err)
		}
		again, err := LoadBytes("roundtrip.json", js)
		if err != nil {
			t.Fatalf("reloading JSON %s: %v", js, err)
		}
		if !proto.Equal(b, again) && !sameBytes(b, again) {
			t.Fatalf("round trip differs:\n first: %v\nsecond: %v", b, again)
		}
	})
}

// sameBytes compares deterministic encodings, which (unlike proto.Equal)
// treats NaN as equal to itself.
func sameBytes(a, b proto.Message) bool {
	opts := proto.MarshalOptions{Deterministic: true}
	x, err1 := opts.Marshal(a)
	y, err2 := opts.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

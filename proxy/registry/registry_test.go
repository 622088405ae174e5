package registry

import (
	"strings"
	"testing"
)

func TestLookupAndDuplicates(t *testing.T) {
	r := New[int]("test filter")
	r.Register("envoy.filters.test", []string{"type.googleapis.com/pkg.Test"}, 7)
	r.Alias("envoy.test", "envoy.filters.test")
	for _, tc := range []struct{ name, typ string }{
		{"envoy.filters.test", ""}, {"anything", "type.googleapis.com/pkg.Test"}, {"envoy.test", ""}, {"x", "pkg.Test"},
	} {
		if f, err := r.Lookup(tc.name, tc.typ); err != nil || f != 7 {
			t.Errorf("Lookup(%q, %q) = %d, %v", tc.name, tc.typ, f, err)
		}
	}
	if _, err := r.Lookup("envoy.filters.test", "type.googleapis.com/pkg.Other"); err == nil || !strings.Contains(err.Error(), "pkg.Other") {
		t.Errorf("unknown type: %v", err)
	}
	if _, err := r.Lookup("nope", ""); err == nil || !strings.Contains(err.Error(), `unsupported test filter "nope"`) {
		t.Errorf("unknown name: %v", err)
	}
	for _, reg := range []func(){
		func() { r.Register("envoy.filters.test", nil, 1) },
		func() { r.Register("other", []string{"pkg.Test"}, 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("duplicate registration did not panic")
				}
			}()
			reg()
		}()
	}
}

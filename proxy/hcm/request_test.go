package hcm

import (
	"testing"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		in, want    string
		dots, merge bool
		ok          bool
	}{
		{"/a/b", "/a/b", true, true, true},
		{"/a/./b/../c", "/a/c", true, false, true},
		{"/../a", "/a", true, false, true},
		{"/a//b///c?x=//", "/a/b/c?x=//", false, true, true},
		{"/a//b", "/a//b", true, false, true},
		{"/a/b/..", "/a/", true, false, true},
		{"*", "*", true, true, true},
		{"a/b", "a/b", true, true, false},
	} {
		got, ok := normalizePath([]byte(tc.in), tc.dots, tc.merge)
		if ok != tc.ok || (ok && string(got) != tc.want) {
			t.Errorf("normalizePath(%q, %v, %v) = %q, %v; want %q, %v", tc.in, tc.dots, tc.merge, got, ok, tc.want, tc.ok)
		}
	}
}

func TestUUID(t *testing.T) {
	var a, b [36]byte
	newUUID(&a)
	newUUID(&b)
	if a == b || a[14] != '4' || a[8] != '-' || a[23] != '-' {
		t.Fatalf("bad uuids %s %s", a[:], b[:])
	}
}

func TestXFFAddr(t *testing.T) {
	var h headers.Map
	h.Set("x-forwarded-for", "1.1.1.1, 2.2.2.2,3.3.3.3")
	for skip, want := range map[int]string{0: "3.3.3.3", 1: "2.2.2.2", 2: "1.1.1.1", 3: ""} {
		a, ok := xffAddr(&h, skip)
		if (want == "") == ok || (ok && a.String() != want) {
			t.Errorf("skip %d: %v %v, want %q", skip, a, ok, want)
		}
	}
}

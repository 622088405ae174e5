package zipkin

import (
	"testing"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

func hdrs(kv ...string) *headers.Map {
	h := &headers.Map{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestExtract(t *testing.T) {
	tests := []struct {
		name string
		h    *headers.Map
		ok   bool
		want spanContext
	}{
		{"multi", hdrs("x-b3-traceid", "0000000000000001", "x-b3-spanid", "0000000000000002", "x-b3-parentspanid", "3", "x-b3-sampled", "1"),
			true, spanContext{traceLow: 1, id: 2, parent: 3, sampled: true, sampledSet: true}},
		{"multi 128", hdrs("x-b3-traceid", "000000000000000a000000000000000b", "x-b3-spanid", "2"),
			true, spanContext{traceHigh: 10, traceLow: 11, id: 2}},
		{"flags debug", hdrs("x-b3-traceid", "0000000000000001", "x-b3-spanid", "2", "x-b3-flags", "1", "x-b3-sampled", "0"),
			true, spanContext{traceLow: 1, id: 2, sampled: true, sampledSet: true}},
		{"sampled only", hdrs("x-b3-sampled", "0"), false, spanContext{sampledSet: true}},
		{"bad trace id", hdrs("x-b3-traceid", "xyz", "x-b3-spanid", "2"), false, spanContext{}},
		{"trace id 20 digits", hdrs("x-b3-traceid", "00000000000000000001", "x-b3-spanid", "2"), false, spanContext{}},
		{"single", hdrs("b3", "0000000000000001-0000000000000002-1-0000000000000003"),
			true, spanContext{traceLow: 1, id: 2, parent: 3, sampled: true, sampledSet: true}},
		{"single no sampling", hdrs("b3", "000000000000000a000000000000000b-0000000000000002"),
			true, spanContext{traceHigh: 10, traceLow: 11, id: 2}},
		{"single deny", hdrs("b3", "0"), false, spanContext{sampledSet: true}},
		{"single debug", hdrs("b3", "0000000000000001-0000000000000002-d"), true, spanContext{traceLow: 1, id: 2, sampled: true, sampledSet: true}},
		{"single wins", hdrs("b3", "0000000000000001-0000000000000002", "x-b3-traceid", "0000000000000005", "x-b3-spanid", "6"),
			true, spanContext{traceLow: 1, id: 2}},
		{"none", hdrs(), false, spanContext{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := extract(tc.h)
			if ok != tc.ok || got != tc.want {
				t.Errorf("extract = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestInject(t *testing.T) {
	c := spanContext{traceHigh: 0xa, traceLow: 0xb, id: 0xc, parent: 0xd, sampled: true}
	h := hdrs("x-b3-parentspanid", "stale")
	c.inject(h)
	want := map[string]string{
		"x-b3-traceid": "000000000000000a000000000000000b", "x-b3-spanid": "000000000000000c",
		"x-b3-parentspanid": "000000000000000d", "x-b3-sampled": "1",
	}
	for k, v := range want {
		if got := h.GetString(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	root := spanContext{traceLow: 1, id: 1}
	root.inject(h)
	if h.Has("x-b3-parentspanid") || h.GetString("x-b3-sampled") != "0" || h.GetString("x-b3-traceid") != "0000000000000001" {
		t.Errorf("root inject: %v", h.Fields())
	}
}

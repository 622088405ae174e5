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
	const tid, sid, pid = "0000000000000001", "0000000000000002", "0000000000000003"
	tests := []struct {
		name      string
		h         *headers.Map
		found     bool
		malformed bool
		want      spanContext
	}{
		{"multi", hdrs("x-b3-traceid", tid, "x-b3-spanid", sid, "x-b3-parentspanid", "3", "x-b3-sampled", "1"),
			true, false, spanContext{traceLow: 1, id: 2, parent: 3, sampled: true, sampledSet: true}},
		{"multi 128", hdrs("x-b3-traceid", "000000000000000a000000000000000b", "x-b3-spanid", "2"),
			true, false, spanContext{traceHigh: 10, traceLow: 11, id: 2}},
		{"sampled true", hdrs("x-b3-traceid", tid, "x-b3-spanid", sid, "x-b3-sampled", "true"),
			true, false, spanContext{traceLow: 1, id: 2, sampled: true, sampledSet: true}},
		{"flags ignored", hdrs("x-b3-traceid", tid, "x-b3-spanid", sid, "x-b3-flags", "1", "x-b3-sampled", "0"),
			true, false, spanContext{traceLow: 1, id: 2, sampledSet: true}},
		{"sampled only", hdrs("x-b3-sampled", "0"), false, false, spanContext{sampledSet: true}},
		{"trace id without span id", hdrs("x-b3-traceid", tid), false, false, spanContext{}},
		{"bad trace id", hdrs("x-b3-traceid", "xyz", "x-b3-spanid", "2"), false, true, spanContext{}},
		{"trace id 20 digits", hdrs("x-b3-traceid", "00000000000000000001", "x-b3-spanid", "2"), false, true, spanContext{}},
		{"bad parent", hdrs("x-b3-traceid", tid, "x-b3-spanid", sid, "x-b3-parentspanid", "zz"), false, true, spanContext{}},
		{"single", hdrs("b3", tid+"-"+sid+"-1-"+pid),
			true, false, spanContext{traceLow: 1, id: 2, parent: 3, sampled: true, sampledSet: true}},
		{"single no sampling", hdrs("b3", "000000000000000a000000000000000b-"+sid),
			true, false, spanContext{traceHigh: 10, traceLow: 11, id: 2}},
		{"single deny", hdrs("b3", "0"), false, false, spanContext{sampledSet: true}},
		{"single debug", hdrs("b3", tid+"-"+sid+"-d"), true, false, spanContext{traceLow: 1, id: 2, sampled: true, sampledSet: true}},
		{"single bad sampling", hdrs("b3", tid+"-"+sid+"-x"), false, true, spanContext{}},
		{"single short span id", hdrs("b3", tid+"-2"), false, true, spanContext{}},
		{"single garbage", hdrs("b3", "zz"), false, true, spanContext{}},
		{"single wins", hdrs("b3", tid+"-"+sid, "x-b3-traceid", "0000000000000005", "x-b3-spanid", "6"),
			true, false, spanContext{traceLow: 1, id: 2}},
		{"none", hdrs(), false, false, spanContext{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, found, err := extract(tc.h)
			if found != tc.found || (err != nil) != tc.malformed || got != tc.want {
				t.Errorf("extract = %+v, %v, %v; want %+v, %v, malformed %v", got, found, err, tc.want, tc.found, tc.malformed)
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

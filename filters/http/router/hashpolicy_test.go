package router

import (
	"net/netip"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// fakeCallbacks gives the hash policy code a stream's info and request
// headers; every other callback panics (nil embedded interface).
type fakeCallbacks struct {
	httpfilter.Callbacks
	info streaminfo.Stream
	req  headers.Map
}

func (c *fakeCallbacks) Info() *streaminfo.Stream     { return &c.info }
func (c *fakeCallbacks) RequestHeaders() *headers.Map { return &c.req }

// hashedHash is a Hashable filter-state object.
type hashedHash uint64

func (h hashedHash) String() (string, bool) { return "", false }
func (h hashedHash) Hash() (uint64, bool)   { return uint64(h), true }

// plainObject is a filter-state object that cannot be hashed.
type plainObject struct{}

func (plainObject) String() (string, bool) { return "x", true }

func routeWithHash(t *testing.T, policies string) *router.Route {
	t.Helper()
	rc := &routev3.RouteConfiguration{}
	js := `{"virtual_hosts":[{"name":"v","domains":["*"],"routes":[{"match":{"prefix":"/"},"route":{"cluster":"c","hash_policy":` + policies + `}}]}]}`
	if err := protojson.Unmarshal([]byte(js), rc); err != nil {
		t.Fatal(err)
	}
	tbl, err := router.Compile(rc, router.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var h headers.Map
	h.Set(headers.Authority, "x")
	h.Set(headers.Path, "/")
	h.Set(headers.Method, "GET")
	r, _ := tbl.Select(&h, 0)
	if r == nil {
		t.Fatal("no route")
	}
	return r
}

func rot(k uint64) uint64 { return k<<1 | k>>63 }

func TestHashPolicyKeys(t *testing.T) {
	xx := func(s string) uint64 { return upstream.XXHash64(s, 0) }
	conn := &streaminfo.Conn{RemoteAddr: netip.MustParseAddrPort("10.1.2.3:5555"), LocalAddr: netip.MustParseAddrPort("127.0.0.1:80")}
	conn.FilterState.Set("conn.key", streaminfo.StringObject("from-conn"))
	tests := []struct {
		name     string
		policies string
		setup    func(c *fakeCallbacks)
		want     uint64
		wantHash bool
	}{
		{"filter state string", `[{"filter_state":{"key":"k"}}]`,
			func(c *fakeCallbacks) { c.info.FilterState.Set("k", streaminfo.StringObject("tenant-a")) }, xx("tenant-a"), true},
		{"filter state hashable", `[{"filter_state":{"key":"k"}}]`,
			func(c *fakeCallbacks) { c.info.FilterState.Set("k", hashedHash(77)) }, 77, true},
		{"filter state from the connection", `[{"filter_state":{"key":"conn.key"}}]`,
			func(c *fakeCallbacks) {}, xx("from-conn"), true},
		{"filter state not hashable", `[{"filter_state":{"key":"k"}}]`,
			func(c *fakeCallbacks) { c.info.FilterState.Set("k", plainObject{}) }, 0, false},
		{"filter state absent", `[{"filter_state":{"key":"k"}}]`, func(c *fakeCallbacks) {}, 0, false},
		{"two combined", `[{"header":{"header_name":"x-a"}},{"filter_state":{"key":"k"}}]`,
			func(c *fakeCallbacks) {
				c.req.Set("x-a", "a")
				c.info.FilterState.Set("k", streaminfo.StringObject("b"))
			}, rot(xx("a")) ^ xx("b"), true},
		{"terminal stops after a hash", `[{"header":{"header_name":"x-a"},"terminal":true},{"filter_state":{"key":"k"}}]`,
			func(c *fakeCallbacks) {
				c.req.Set("x-a", "a")
				c.info.FilterState.Set("k", streaminfo.StringObject("b"))
			}, xx("a"), true},
		{"terminal without its own hash stops on an earlier one", `[{"header":{"header_name":"x-a"}},{"header":{"header_name":"x-missing"},"terminal":true},{"filter_state":{"key":"k"}}]`,
			func(c *fakeCallbacks) {
				c.req.Set("x-a", "a")
				c.info.FilterState.Set("k", streaminfo.StringObject("b"))
			}, xx("a"), true},
		{"terminal without any hash goes on", `[{"header":{"header_name":"x-missing"},"terminal":true},{"filter_state":{"key":"k"}}]`,
			func(c *fakeCallbacks) { c.info.FilterState.Set("k", streaminfo.StringObject("b")) }, xx("b"), true},
		{"header values in any order", `[{"header":{"header_name":"x-a"}}]`,
			func(c *fakeCallbacks) { c.req.Add("x-a", "2"); c.req.Add("x-a", "1") },
			upstream.XXHash64("2", upstream.XXHash64("1", 0)), true},
		{"header regex_rewrite", `[{"header":{"header_name":"x-a","regex_rewrite":{"pattern":{"regex":"^/v[0-9]+/"},"substitution":"/"}}}]`,
			func(c *fakeCallbacks) { c.req.Set("x-a", "/v12/users") }, xx("/users"), true},
		{"source ip", `[{"connection_properties":{"source_ip":true}}]`, func(c *fakeCallbacks) {}, xx("10.1.2.3"), true},
		{"query parameter decoded", `[{"query_parameter":{"name":"u"}}]`,
			func(c *fakeCallbacks) { c.req.Set(headers.Path, "/p?a=1&u=j%20d&u=other") }, xx("j d"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cb := &fakeCallbacks{}
			cb.info.Reset(conn, cb.info.StartTime)
			tt.setup(cb)
			f := &filter{cb: cb, route: routeWithHash(t, tt.policies)}
			lb := f.lbContext()
			if lb.HasHash != tt.wantHash || lb.HashKey != tt.want {
				t.Errorf("hash = %d (has %v), want %d (has %v)", lb.HashKey, lb.HasHash, tt.want, tt.wantHash)
			}
		})
	}
}

// A generated cookie is Envoy's 16-hex-digit hash of the connection's
// remote and local addresses.
func TestHashPolicyGeneratedCookie(t *testing.T) {
	conn := &streaminfo.Conn{RemoteAddr: netip.MustParseAddrPort("10.1.2.3:5555"), LocalAddr: netip.MustParseAddrPort("127.0.0.1:80")}
	cb := &fakeCallbacks{}
	cb.info.Reset(conn, cb.info.StartTime)
	f := &filter{cb: cb, route: routeWithHash(t, `[{"cookie":{"name":"s","ttl":"60s","path":"/a"}}]`)}
	lb := f.lbContext()
	val := cookieHex(upstream.XXHash64("10.1.2.3:5555127.0.0.1:80", 0))
	if len(val) != 16 {
		t.Fatalf("cookie value %q", val)
	}
	if want := `s="` + val + `"; Max-Age=60; Path=/a; HttpOnly`; f.setCookie != want {
		t.Errorf("set-cookie %q, want %q", f.setCookie, want)
	}
	if !lb.HasHash || lb.HashKey != upstream.XXHash64(val, 0) {
		t.Errorf("hash %d", lb.HashKey)
	}
	// The client sending it back hashes the same.
	cb.req.Set("cookie", "other=1; s=\""+val+"\"")
	f.setCookie = ""
	if lb := f.lbContext(); lb.HashKey != upstream.XXHash64(val, 0) || f.setCookie != "" {
		t.Errorf("with the cookie: hash %d, set-cookie %q", lb.HashKey, f.setCookie)
	}
}

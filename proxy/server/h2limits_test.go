package server_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// Envoy's HTTP/2 flood limits (http2_protocol_options max_outbound_frames,
// max_outbound_control_frames,
// max_consecutive_inbound_frames_with_empty_payload,
// max_inbound_priority_frames_per_stream,
// max_inbound_window_update_frames_per_data_frame_sent): each flood closes
// its connection and counts http2.<flood>, other clients are still served,
// and a higher configured limit lets the same traffic through.

const floodRoutes = `- match: {prefix: "/dr"}
  direct_response: {status: 200, body: {inline_string: "ok"}}
` + routeToUp

func floodProxy(t *testing.T, h2opts string) *servertest.Proxy {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	extra := ""
	if h2opts != "" {
		extra = "http2_protocol_options: {" + h2opts + "}"
	}
	// A small send buffer on the listener (inherited by accepted sockets)
	// keeps what the client does not read in the proxy's outbound queue.
	yaml := strings.Replace(httpBootstrap(up.port(), floodRoutes, extra), "    filter_chains:",
		"    socket_options: [{level: 1, name: 7, int_value: 4096}] # SOL_SOCKET SO_SNDBUF\n    filter_chains:", 1)
	return servertest.Start(t, yaml)
}

// dialSlowH2 is dialAtkH2 with a small receive buffer, so that what the
// client does not read stays queued in the proxy rather than in the kernel.
func dialSlowH2(t *testing.T, addr string) *atkH2 {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &atkH2{c: c, fr: http2.NewFramer(c, c)}
	r.fr.SetMaxReadFrameSize(1 << 20)
	r.enc = hpack.NewEncoder(&r.hbuf)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return r
}

// closed reports whether the server closed the connection within 10 s,
// reading (and discarding) at most 200000 frames.
func (r *atkH2) closed() bool {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range 200000 {
		if _, err := r.fr.ReadFrame(); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
	return false
}

// servedOn reports whether a GET /dr on stream id of r is answered 200:
// the connection is alive and well.
func (r *atkH2) servedOn(t *testing.T, id uint32) bool {
	t.Helper()
	blk := r.pathBlock("/dr")
	// A fresh write deadline: the flood's may have passed while the proxy
	// worked through it.
	_ = r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true}); err != nil {
		t.Logf("GET on stream %d: %v", id, err)
		return false
	}
	// The answers to tens of thousands of queued requests come first: allow
	// for a slow (race detector) run, still bounded in frames and time.
	_ = r.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for range 300000 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return false
		}
		if f.Header().StreamID == id && f.Header().Type == http2.FrameHeaders {
			return true
		}
	}
	return false
}

// pathBlock encodes a GET header block for path.
func (r *atkH2) pathBlock(path string) []byte {
	r.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", path}, {":authority", "front"}} {
		r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return bytes.Clone(r.hbuf.Bytes())
}

// flood sends n copies of a frame (bounded; stops at the first write error).
func flood(r *atkH2, n int, send func(i int) error) int {
	_ = r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		if send(i) != nil {
			return i
		}
	}
	return n
}

// drGets sends n GET /dr requests on streams 1, 3, ... without reading.
func drGets(r *atkH2, n int) func(i int) error {
	blk := r.pathBlock("/dr")
	return func(i int) error {
		return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: blk, EndStream: true, EndHeaders: true})
	}
}

func TestH2FloodLimits(t *testing.T) {
	type attack struct {
		send  func(t *testing.T, p *servertest.Proxy, r *atkH2) // the flood
		after uint32                                            // a free stream id for the check that the connection lives
	}
	emptyData := func(n int) attack {
		return attack{func(t *testing.T, _ *servertest.Proxy, r *atkH2) {
			if err := r.headers(1, true); err != nil {
				t.Fatal(err)
			}
			flood(r, n, func(int) error { return r.fr.WriteData(1, false, nil) })
		}, 3}
	}
	// Padded DATA frames without data are empty too (Envoy counts the
	// payload less its padding).
	emptyPadded := func(n int) attack {
		return attack{func(t *testing.T, _ *servertest.Proxy, r *atkH2) {
			if err := r.headers(1, true); err != nil {
				t.Fatal(err)
			}
			flood(r, n, func(int) error { return r.fr.WriteDataPadded(1, false, nil, make([]byte, 7)) })
		}, 3}
	}
	priority := func(n int) attack {
		return attack{func(t *testing.T, _ *servertest.Proxy, r *atkH2) {
			flood(r, n, func(int) error {
				return r.fr.WritePriority(101, http2.PriorityParam{StreamDep: 0, Weight: 16})
			})
		}, 1}
	}
	// One request answered (its DATA frames count), then n WINDOW_UPDATEs.
	windowUpdate := func(n int) attack {
		return attack{func(t *testing.T, _ *servertest.Proxy, r *atkH2) {
			if !r.servedOn(t, 1) {
				t.Fatal("first request not served")
			}
			if _, err := r.until(func(f http2.Frame) bool { return f.Header().Flags.Has(http2.FlagDataEndStream) }); err != nil {
				t.Fatal(err)
			}
			flood(r, n, func(int) error { return r.fr.WriteWindowUpdate(0, 1) })
		}, 3}
	}
	pings := func(n int) attack {
		return attack{func(t *testing.T, _ *servertest.Proxy, r *atkH2) {
			flood(r, n, func(i int) error { return r.fr.WritePing(false, [8]byte{byte(i), byte(i >> 8)}) })
		}, 1}
	}
	gets := func(n int) attack {
		return attack{func(t *testing.T, p *servertest.Proxy, r *atkH2) {
			sent := flood(r, n, drGets(r, n))
			// Let the proxy answer them all (or give up on the connection)
			// before reading anything.
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if p.Stat("http.ingress.downstream_rq_total") >= int64(sent) || p.Stat("http2.outbound_flood") > 0 {
					break
				}
			}
		}, uint32(2*n + 1)}
	}
	cases := []struct {
		name   string
		h2opts string
		atk    attack
		stat   string // "" : the traffic is within the limit
	}{
		{"empty DATA default", "", emptyData(2), "inbound_empty_frames_flood"},
		{"empty DATA configured", "max_consecutive_inbound_frames_with_empty_payload: 5", emptyData(6), "inbound_empty_frames_flood"},
		{"empty DATA higher limit", "max_consecutive_inbound_frames_with_empty_payload: 50", emptyData(40), ""},
		{"padded empty DATA default", "", emptyPadded(2), "inbound_empty_frames_flood"},
		{"padded empty DATA higher limit", "max_consecutive_inbound_frames_with_empty_payload: 50", emptyPadded(40), ""},
		{"PRIORITY default", "", priority(101), "inbound_priority_frames_flood"},
		{"PRIORITY configured", "max_inbound_priority_frames_per_stream: 5", priority(6), "inbound_priority_frames_flood"},
		{"PRIORITY higher limit", "max_inbound_priority_frames_per_stream: 500", priority(300), ""},
		{"WINDOW_UPDATE default", "", windowUpdate(100), "inbound_window_update_frames_flood"},
		{"WINDOW_UPDATE configured", "max_inbound_window_update_frames_per_data_frame_sent: 1", windowUpdate(20), "inbound_window_update_frames_flood"},
		{"WINDOW_UPDATE higher limit", "max_inbound_window_update_frames_per_data_frame_sent: 1000", windowUpdate(100), ""},
		{"PING default", "", pings(60000), "outbound_control_flood"},
		{"PING configured", "max_outbound_control_frames: 100", pings(20000), "outbound_control_flood"},
		// Fewer PINGs than the 10000 queued control frames x/net's server
		// allowed, the bound this case was written under.
		{"PING higher limit", "max_outbound_control_frames: 100000, max_outbound_frames: 100000", pings(9000), ""},
		{"outbound default", "max_concurrent_streams: 100000", gets(20000), "outbound_flood"},
		{"outbound higher limit (GET)", "max_outbound_frames: 1000000, max_concurrent_streams: 100000", gets(20000), ""},
		{"outbound configured", "max_outbound_frames: 200, max_concurrent_streams: 100000", gets(3000), "outbound_flood"},
		{"outbound higher limit", "max_outbound_frames: 100000, max_concurrent_streams: 100000", gets(3000), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := floodProxy(t, tc.h2opts)
			r := dialSlowH2(t, p.Addr("front"))
			tc.atk.send(t, p, r)
			if tc.stat == "" {
				if !r.servedOn(t, tc.atk.after) {
					t.Fatal("traffic within the configured limit: the connection no longer serves")
				}
				for _, s := range []string{"outbound_flood", "outbound_control_flood", "inbound_empty_frames_flood",
					"inbound_priority_frames_flood", "inbound_window_update_frames_flood"} {
					if v := p.Stat("http2." + s); v != 0 {
						t.Fatalf("http2.%s = %d, want 0", s, v)
					}
				}
			} else {
				if !r.closed() {
					t.Fatal("the flood did not close the connection")
				}
				p.WaitStat("http2."+tc.stat, 1)
			}
			resp, err := h2Client(t).Get(p.URL("front", "/after"))
			if err != nil {
				t.Fatalf("another client: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "ok" {
				t.Fatalf("another client: %d %q", resp.StatusCode, b)
			}
		})
	}
}

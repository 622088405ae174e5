package server_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// atkH2 is an HTTP/2 client on x/net's Framer, for sending what a normal
// client never would.
type atkH2 struct {
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func dialAtkH2(t *testing.T, addr string) *atkH2 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &atkH2{c: c, fr: http2.NewFramer(c, c)}
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

// block encodes a request header block: GET (POST when body) / plus extra
// name/value pairs.
func (r *atkH2) block(body bool, extra ...string) []byte {
	r.hbuf.Reset()
	m := "GET"
	if body {
		m = "POST"
	}
	for _, f := range [][2]string{{":method", m}, {":scheme", "http"}, {":path", "/"}, {":authority", "front"}} {
		r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		r.enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return bytes.Clone(r.hbuf.Bytes())
}

func (r *atkH2) headers(id uint32, body bool, extra ...string) error {
	return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block(body, extra...), EndStream: !body, EndHeaders: true})
}

// until reads frames (at most 100000, for at most 10s) until match says
// stop; it returns the matching frame, or nil and the read error.
func (r *atkH2) until(match func(http2.Frame) bool) (http2.Frame, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range 100000 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if match(f) {
			return f, nil
		}
	}
	return nil, errors.New("no matching frame")
}

// closedOrGoAway reports whether the server sent GOAWAY or closed the
// connection within 10 s, draining whatever else it sends.
func (r *atkH2) closedOrGoAway() bool {
	f, err := r.until(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	if f != nil {
		return true
	}
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func heapMB() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc >> 20
}

// defenseProxy is a proxy in front of an upstream that counts its requests.
func defenseProxy(t *testing.T, hcmExtra string) (*servertest.Proxy, *atomic.Int64) {
	var n atomic.Int64
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/big" {
			w.Write(bytes.Repeat([]byte("b"), 4<<20))
			return
		}
		io.WriteString(w, "ok")
	})
	return servertest.Start(t, httpBootstrap(up.port(), routeToUp, hcmExtra)), &n
}

// TestH2AttackDefenses sends each attack on its own connection, checks the
// proxy's answer to it, then that another client is served and the heap
// stayed bounded.
func TestH2AttackDefenses(t *testing.T) {
	const heapBoundMB = 64
	cases := []struct {
		name   string
		extra  string
		attack func(t *testing.T, p *servertest.Proxy, upReqs *atomic.Int64)
	}{
		{"rapid reset", "", func(t *testing.T, p *servertest.Proxy, upReqs *atomic.Int64) {
			r := dialAtkH2(t, p.Addr("front"))
			sent := 0
			for id := uint32(1); id < 20000; id += 2 {
				if r.headers(id, false) != nil || r.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					break
				}
				sent++
			}
			if !r.closedOrGoAway() {
				t.Fatalf("after %d HEADERS+RST_STREAM the connection is still open", sent)
			}
			p.WaitStat("http.ingress.downstream_rq_too_many_premature_resets", 1)
			if n := upReqs.Load(); n > 600 {
				t.Fatalf("%d upstream requests for reset streams, want at most 600", n)
			}
		}},
		{"CONTINUATION flood", "max_request_headers_kb: 16", func(t *testing.T, p *servertest.Proxy, _ *atomic.Int64) {
			r := dialAtkH2(t, p.Addr("front"))
			first := r.block(false)
			if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true}); err != nil {
				t.Fatal(err)
			}
			r.hbuf.Reset()
			for i := range 300 {
				r.enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("c", 1000+i)})
			}
			chunk := r.hbuf.Bytes()
			for i := 0; i < 10000; i++ {
				frag := chunk[(i*16000)%(len(chunk)-16000):][:16000]
				if r.fr.WriteContinuation(1, false, frag) != nil {
					break
				}
			}
			if !r.closedOrGoAway() {
				t.Fatal("endless CONTINUATION frames did not close the connection")
			}
		}},
		{"HPACK bomb", "max_request_headers_kb: 8", func(t *testing.T, p *servertest.Proxy, upReqs *atomic.Int64) {
			r := dialAtkH2(t, p.Addr("front"))
			extra := []string{}
			for range 200 { // one 3000-byte table entry, then 1-byte references to it
				extra = append(extra, "x-bomb", strings.Repeat("h", 3000))
			}
			before := upReqs.Load()
			if err := r.headers(1, false, extra...); err != nil {
				t.Fatal(err)
			}
			f, err := r.until(func(f http2.Frame) bool {
				switch f.(type) {
				case *http2.HeadersFrame, *http2.RSTStreamFrame, *http2.GoAwayFrame:
					return true
				}
				return false
			})
			if err != nil {
				t.Fatal(err)
			}
			if h, ok := f.(*http2.HeadersFrame); ok {
				var status string
				hpack.NewDecoder(4096, func(hf hpack.HeaderField) {
					if hf.Name == ":status" {
						status = hf.Value
					}
				}).Write(h.HeaderBlockFragment())
				if status != "431" {
					t.Fatalf("600 KB decoded header list answered %s, want 431 or a reset", status)
				}
			}
			if upReqs.Load() != before {
				t.Fatal("the HPACK bomb reached the upstream")
			}
		}},
		{"PING flood", "", func(t *testing.T, p *servertest.Proxy, _ *atomic.Int64) {
			r := dialAtkH2(t, p.Addr("front"))
			for i := range 200000 { // never reads the PING ACKs
				if r.fr.WritePing(false, [8]byte{byte(i)}) != nil {
					break
				}
			}
		}},
		{"SETTINGS flood", "", func(t *testing.T, p *servertest.Proxy, _ *atomic.Int64) {
			r := dialAtkH2(t, p.Addr("front"))
			for range 200000 {
				if r.fr.WriteSettings() != nil {
					break
				}
			}
		}},
		{"zero-length DATA flood", "", func(t *testing.T, p *servertest.Proxy, _ *atomic.Int64) {
			r := dialAtkH2(t, p.Addr("front"))
			if err := r.headers(1, true); err != nil {
				t.Fatal(err)
			}
			for range 200000 {
				if r.fr.WriteData(1, false, nil) != nil {
					break
				}
			}
			_ = r.fr.WriteData(1, true, []byte("end"))
		}},
		{"WINDOW_UPDATE overflow", "", func(t *testing.T, p *servertest.Proxy, _ *atomic.Int64) {
			r := dialAtkH2(t, p.Addr("front"))
			for range 10000 {
				if r.fr.WriteWindowUpdate(0, 1<<30) != nil {
					break
				}
			}
			f, err := r.until(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
			if err != nil {
				t.Fatalf("window beyond 2^31-1: %v, want GOAWAY FLOW_CONTROL_ERROR", err)
			}
			if code := f.(*http2.GoAwayFrame).ErrCode; code != http2.ErrCodeFlowControl {
				t.Fatalf("GOAWAY %v, want FLOW_CONTROL_ERROR", code)
			}
		}},
		{"max_concurrent_streams exceeded", "http2_protocol_options: {max_concurrent_streams: 4}", func(t *testing.T, p *servertest.Proxy, _ *atomic.Int64) {
			r := dialAtkH2(t, p.Addr("front"))
			// Streams with a body still to come stay open; the fifth is
			// refused. Our SETTINGS ACK is never sent, so the server
			// answers REFUSED_STREAM.
			for id := uint32(1); id <= 9; id += 2 {
				if err := r.headers(id, true); err != nil {
					t.Fatal(err)
				}
			}
			f, err := r.until(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
			if err != nil {
				t.Fatal(err)
			}
			if rst := f.(*http2.RSTStreamFrame); rst.StreamID != 9 || rst.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("RST_STREAM %d %v, want stream 9 REFUSED_STREAM", rst.StreamID, rst.ErrCode)
			}
		}},
		{"slow reader", "stream_idle_timeout: 0.3s", func(t *testing.T, p *servertest.Proxy, _ *atomic.Int64) {
			r := dialAtkH2(t, p.Addr("front"))
			r.hbuf.Reset()
			// A 4 MiB response to a client that never opens its window
			// beyond the initial 64 KiB: the stream is reset once no
			// progress was made for stream_idle_timeout.
			r.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
			r.enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
			r.enc.WriteField(hpack.HeaderField{Name: ":path", Value: "/big"})
			r.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "front"})
			if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			f, err := r.until(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
			if err != nil {
				t.Fatalf("slow reader's stream never reset: %v", err)
			}
			if f.Header().StreamID != 1 || time.Since(start) < 300*time.Millisecond {
				t.Fatalf("RST_STREAM on stream %d after %v", f.Header().StreamID, time.Since(start))
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, upReqs := defenseProxy(t, tc.extra)
			base := heapMB()
			tc.attack(t, p, upReqs)
			resp, err := h2Client(t).Get(p.URL("front", "/after"))
			if err != nil {
				t.Fatalf("another client after the attack: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "ok" {
				t.Fatalf("another client after the attack: %d %q", resp.StatusCode, b)
			}
			if h := heapMB(); h > base+heapBoundMB {
				t.Fatalf("heap %d MiB after the attack, %d MiB before", h, base)
			}
		})
	}
}

package bench

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// holdIdleH2 dials n HTTP/2 (prior knowledge) connections to addr, each
// completing the SETTINGS exchange and one GET, and returns them idle. The
// client keeps nothing but the socket, so what the process holds beyond
// the bare-socket baseline is the proxy's.
func holdIdleH2(tb testing.TB, addr string, n int) []net.Conn {
	tb.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "bench"}, {":path", "/"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			tb.Fatalf("dial %d: %v", len(conns), err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
			tb.Fatal(err)
		}
		fr := http2.NewFramer(c, c)
		if err := fr.WriteSettings(); err != nil {
			tb.Fatal(err)
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			tb.Fatal(err)
		}
		for done := false; !done; {
			f, err := fr.ReadFrame()
			if err != nil {
				tb.Fatalf("conn %d: %v", len(conns), err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			case *http2.DataFrame:
				done = f.StreamEnded()
			case *http2.HeadersFrame:
				done = f.StreamEnded()
			case *http2.GoAwayFrame:
				tb.Fatalf("conn %d: GOAWAY %v", len(conns), f.ErrCode)
			}
		}
		_ = c.SetDeadline(time.Time{})
		conns = append(conns, c)
	}
	return conns
}

// BenchmarkIdleHTTP2Conns is BenchmarkIdleHTTP1Conns for HTTP/2 (h2c with
// prior knowledge, codec AUTO): idleConns connections each served one GET,
// then idle, and the proxy's growth per connection in heap, stacks and
// runtime in-use memory over the bare-socket baseline. Issue 7's goal is
// 32 KiB per idle HTTP/2 connection. Use -benchtime=1x.
func BenchmarkIdleHTTP2Conns(b *testing.B) {
	p := startServer(b)
	addr := p.Addr("front")
	for _, c := range holdIdleH2(b, addr, 32) { // warm pools
		c.Close()
	}
	measureIdle(b, func(n int) []net.Conn { return holdIdleH2(b, addr, n) }, 200*time.Millisecond) // idleGrace and parking
}

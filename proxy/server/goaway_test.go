package server_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// gatedUpstream holds every request until release is closed, then answers
// with its path.
func gatedUpstream(t *testing.T) (up *upstream, arrived chan string, release func()) {
	gate := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	arrived = make(chan string, 100)
	up = startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- r.URL.Path
		<-gate
		io.WriteString(w, "served "+r.URL.Path)
	})
	return up, arrived, release
}

func waitArrived(t *testing.T, arrived chan string, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d requests reached the upstream", i, n)
		}
	}
}

func isGoAway(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }

// The drain sends Envoy's two GOAWAYs: first the shutdown notice (last
// stream id 2^31-1), then after drain_timeout the real one naming the last
// stream opened. A stream opened between the two is served, as is the one
// in flight; the connection closes once they are done.
func TestH2TwoStepGoAway(t *testing.T) {
	up, arrived, release := gatedUpstream(t)
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, "drain_timeout: 1s"))
	r := dialRawH2(t, p.Addr("front"))
	r.get(1, "a", "/first")
	waitArrived(t, arrived, 1)
	start := time.Now()
	if code, _ := p.Admin("POST", "/drain_listeners?graceful"); code != 200 {
		t.Fatalf("drain_listeners: %d", code)
	}
	notice := r.next("shutdown notice", isGoAway).(*http2.GoAwayFrame)
	if notice.ErrCode != http2.ErrCodeNo || notice.LastStreamID != 1<<31-1 {
		t.Fatalf("first GOAWAY: %v, last stream %d; want NO_ERROR, 2^31-1", notice.ErrCode, notice.LastStreamID)
	}
	r.get(3, "a", "/after-notice") // opened before the real GOAWAY: must be served
	waitArrived(t, arrived, 1)
	final := r.next("real GOAWAY", isGoAway).(*http2.GoAwayFrame)
	if final.ErrCode != http2.ErrCodeNo || final.LastStreamID != 3 {
		t.Fatalf("second GOAWAY: %v, last stream %d; want NO_ERROR, 3", final.ErrCode, final.LastStreamID)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("the real GOAWAY came %v after the notice; drain_timeout is 1s", d)
	}
	release()
	served := map[uint32]string{}
	for range 400 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			break // the proxy closes the connection once both streams are done
		}
		if d, ok := f.(*http2.DataFrame); ok {
			served[d.StreamID] += string(d.Data())
		}
	}
	if served[1] != "served /first" || served[3] != "served /after-notice" {
		t.Fatalf("streams served: %v", served)
	}
	p.WaitStat("http.ingress.downstream_cx_drain_close", 1)
}

// A real x/net client with streams in flight when the drain starts: every
// one of them is served, none refused or reset.
func TestH2TwoStepGoAwayClient(t *testing.T) {
	up, arrived, release := gatedUpstream(t)
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, "drain_timeout: 1s"))
	client := h2Client(t)
	const n = 8
	var served, failed atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(p.URL("front", "/inflight/"+string(rune('a'+i))))
			if err != nil {
				failed.Add(1)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.HasPrefix(string(b), "served /inflight/") {
				served.Add(1)
			}
		}()
	}
	waitArrived(t, arrived, n)
	if code, _ := p.Admin("POST", "/drain_listeners?graceful"); code != 200 {
		t.Fatalf("drain_listeners: %d", code)
	}
	time.Sleep(300 * time.Millisecond) // the notice reaches the client
	release()
	wg.Wait()
	if served.Load() != n || failed.Load() != 0 {
		t.Fatalf("in-flight streams: %d served, %d failed; want %d served", served.Load(), failed.Load(), n)
	}
	p.WaitStat("http.ingress.downstream_cx_drain_close", 1)
}

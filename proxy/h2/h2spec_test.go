package h2

import (
	"io"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/h2/h2spectest"
	"github.com/outrider-proxy/outrider/proxy/headers"
)

// TestH2Spec runs every h2spec case (generic and http2 suites) against the
// echo server and fails on any failed case.
func TestH2Spec(t *testing.T) {
	bin := h2spectest.Path()
	if bin == "" {
		t.Skip("h2spec is not installed: " + h2spectest.InstallHint)
	}
	addr := startServer(t, nil, HandlerFunc(answerOK))
	_, port, _ := net.SplitHostPort(addr)
	failed, out, total := h2spectest.Run(t, bin, port)
	if len(failed) > 0 {
		var list []string
		for id, name := range failed {
			list = append(list, id+": "+name)
		}
		sort.Strings(list)
		t.Fatalf("h2spec: %d of %d cases failed:\n%s\noutput:\n%s", len(failed), total, strings.Join(list, "\n"), out)
	}
	t.Logf("h2spec: %d cases passed", total)
}

// answerOK reads the request and answers 200 with a 2-byte body (h2spec
// expects DATA frames in answers).
func answerOK(s *Stream) {
	for range 1 << 20 {
		if _, err := s.ReadData(time.Now().Add(5 * time.Second)); err != nil {
			if err != io.EOF {
				return
			}
			break
		}
	}
	var h headers.Map
	h.Set(":status", "200")
	h.Set("content-length", "2")
	if s.WriteHeaders(&h, false) == nil {
		_ = s.WriteData([]byte("ok"), true)
	}
}

package server_test

import (
	"net"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/h2/h2spectest"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// h2specRacy are cases whose outcome depends on timing: each sends a request
// without END_STREAM and, back to back, frames that are errors only on an
// open stream. When the direct response has already ended the stream, the
// server resets it with NO_ERROR (RFC 9113 section 8.1) and the later
// frames are on a closed stream, instead of the error the case expects
// (Envoy's codec has the same race). 8.1.2.6/1 and /2: DATA beyond the
// declared content-length (PROTOCOL_ERROR); 6.9.1/3: WINDOW_UPDATEs past
// 2^31-1 (FLOW_CONTROL_ERROR). The codec (proxy/h2) starts a handler only
// after the frames read with its HEADERS, which narrows the window to frames
// that arrive in a later read.
var h2specRacy = map[string]bool{"http2/8.1.2.6/1": true, "http2/8.1.2.6/2": true, "http2/6.9.1/3": true}

// TestH2Spec runs every h2spec case against an h2c listener with a
// direct_response route (examples/conformance/h2c.yaml on port 0) and fails
// on any failed case other than the timing-dependent ones.
func TestH2Spec(t *testing.T) {
	bin := h2spectest.Path()
	if bin == "" {
		t.Skip("h2spec is not installed: " + h2spectest.InstallHint)
	}
	raw, err := os.ReadFile("../../examples/conformance/h2c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	yaml := strings.NewReplacer("port_value: 19901", "port_value: 0", "port_value: 10080", "port_value: 0").Replace(string(raw))
	p := servertest.Start(t, yaml)
	_, port, _ := net.SplitHostPort(p.Addr("h2c"))
	// A few cases race the server's own timing on a loaded machine: a run
	// with unexpected failures is retried, and the test fails only when the
	// third run has some too.
	var unexpected []string
	var out []byte
	var total, nfailed int
	for attempt := 0; attempt < 3; attempt++ {
		unexpected, out, total, nfailed = runH2Spec(t, bin, port)
		if len(unexpected) == 0 {
			return
		}
	}
	sort.Strings(unexpected)
	if len(unexpected) > 0 {
		t.Fatalf("h2spec (%d cases, %d failed):\n%s\noutput:\n%s", total, nfailed, strings.Join(unexpected, "\n"), out)
	}
}

// runH2Spec runs h2spec once and returns the failures that are not
// timing-dependent.
func runH2Spec(t *testing.T, bin, port string) (unexpected []string, out []byte, total, nfailed int) {
	t.Helper()
	failed, out, total := h2spectest.Run(t, bin, port)
	for id, name := range failed {
		if !h2specRacy[id] {
			unexpected = append(unexpected, id+": "+name)
		}
	}
	return unexpected, out, total, len(failed)
}

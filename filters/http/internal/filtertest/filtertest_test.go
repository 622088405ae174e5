package filtertest_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
)

func TestIndent(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a: 1\nb:\n  c: 2", "    a: 1\n    b:\n      c: 2"},
		{"\n      a: 1\n\n        b: 2\n", "    a: 1\n\n      b: 2"},
		{"  - x\n  -   y", "    - x\n    -   y"},
	} {
		if got := filtertest.Indent(tc.in, 4); got != tc.want {
			t.Errorf("Indent(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The harness's bootstrap compiles and routes a request to the upstream,
// through a filter given at its own indent.
func TestStartAndDo(t *testing.T) {
	p := filtertest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen", r.Header.Get("X-Sent")+" "+r.Method)
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}), func(port int) string {
		return filtertest.Config(port, filtertest.Listener("l", "", `
        - name: envoy.filters.http.health_check
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck
            pass_through_mode: false
            headers: [{name: ":path", string_match: {exact: /hc}}]`))
	})
	resp, body := filtertest.Do(t, nil, filtertest.NewRequest(t, "POST", p.URL("l", "/x"), "hello", "X-Sent", "v"))
	if resp.StatusCode != 200 || body != "hello" || resp.Header.Get("X-Seen") != "v POST" {
		t.Fatalf("upstream answer: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := filtertest.Do(t, nil, filtertest.NewRequest(t, "GET", p.URL("l", "/hc"), "")); resp.StatusCode != 200 || resp.Header.Get("X-Seen") != "" || body != "" {
		t.Fatalf("health check answer: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

func TestReadPiece(t *testing.T) {
	r, w := io.Pipe()
	go func() {
		io.WriteString(w, "first;")
		// The rest never comes: ReadPiece must not wait for it.
	}()
	filtertest.ReadPiece(t, r, "first;")
	w.Close()
}

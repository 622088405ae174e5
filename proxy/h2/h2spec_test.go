package h2

import (
	"context"
	"encoding/xml"
	"fmt"
	"go/build"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

type h2specReport struct {
	Suites []struct {
		Package string `xml:"package,attr"`
		Cases   []struct {
			Name    string    `xml:"classname,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func h2specPath() string {
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	p := filepath.Join(build.Default.GOPATH, "bin", "h2spec")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// TestH2Spec runs every h2spec case (generic and http2 suites) against the
// echo server and fails on any failed case.
func TestH2Spec(t *testing.T) {
	bin := h2specPath()
	if bin == "" {
		t.Skip("h2spec is not installed")
	}
	addr := startServer(t, nil, HandlerFunc(answerOK))
	_, port, _ := net.SplitHostPort(addr)
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", port, "-o", "2", "-j", report).CombinedOutput()
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("no h2spec report (%v); output:\n%s", err, out)
	}
	var rep h2specReport
	if err := xml.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	var failed []string
	total := 0
	for _, s := range rep.Suites {
		for i, c := range s.Cases {
			total++
			if c.Failure != nil || c.Error != nil {
				failed = append(failed, fmt.Sprintf("%s/%d: %s", s.Package, i+1, c.Name))
			}
		}
	}
	if total < 140 {
		t.Fatalf("h2spec ran %d cases, want the full suite; output:\n%s", total, out)
	}
	sort.Strings(failed)
	if len(failed) > 0 {
		t.Fatalf("h2spec: %d of %d cases failed:\n%s\noutput:\n%s", len(failed), total, strings.Join(failed, "\n"), out)
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

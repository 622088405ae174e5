// Package h2spectest runs the h2spec HTTP/2 conformance tool against a test
// server and reads its JUnit report, for the tests of proxy/h2 and
// proxy/server. Run fails the test when h2spec wrote no report or ran
// fewer than the full suite's cases; judging the failed cases is the
// caller's.
package h2spectest

import (
	"context"
	"encoding/xml"
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// InstallHint says how to install h2spec, for a test's skip message.
const InstallHint = "go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible (.ci/run does)"

// minCases is fewer cases than the full suite (145) runs.
const minCases = 140

type report struct {
	Suites []struct {
		Package string `xml:"package,attr"`
		Cases   []struct {
			Name    string    `xml:"classname,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// Path is the h2spec binary: on PATH or in GOPATH/bin; "" when neither.
func Path() string {
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	p := filepath.Join(build.Default.GOPATH, "bin", "h2spec")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// Run runs h2spec (bin, every suite, 2 s timeout a case, at most 4 minutes
// in all) against 127.0.0.1:port. failed maps each failed case, as
// "suite/number" (e.g. "http2/6.5.3/1"), to its description; out is
// h2spec's output and total the number of cases run.
func Run(tb testing.TB, bin, port string) (failed map[string]string, out []byte, total int) {
	tb.Helper()
	file := filepath.Join(tb.TempDir(), "h2spec.xml")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, _ = exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", port, "-o", "2", "-j", file).CombinedOutput()
	data, err := os.ReadFile(file)
	if err != nil {
		tb.Fatalf("no h2spec report (%v); output:\n%s", err, out)
	}
	var rep report
	if err := xml.Unmarshal(data, &rep); err != nil {
		tb.Fatalf("h2spec report: %v", err)
	}
	failed = map[string]string{}
	for _, s := range rep.Suites {
		for i, c := range s.Cases {
			total++
			if c.Failure != nil || c.Error != nil {
				failed[fmt.Sprintf("%s/%d", s.Package, i+1)] = c.Name
			}
		}
	}
	if total < minCases {
		tb.Fatalf("h2spec ran %d cases, want the full suite (145); output:\n%s", total, out)
	}
	return failed, out, total
}

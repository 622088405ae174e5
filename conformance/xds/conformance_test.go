// Package confxds runs go-control-plane's own integration test (pkg/test/main of v0.14.0, the one its
// CI runs against Envoy) with outrider in Envoy's place, in every xDS mode and with TLS. Binaries are
// built by run.sh from the module cache; each mode gets ports picked at run time.
package confxds

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// build runs run.sh build into dir (bin/, sample/).
func build(t *testing.T, dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", "run.sh", "build", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("run.sh build: %v\n%s", err, out)
	}
}

// ports hands out free ports; held ones are never handed out twice in this process.
var (
	portMu sync.Mutex
	given  = map[int]bool{}
)

// freePort reserves a port with port 0 and releases it.
func freePort(t *testing.T) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 50 {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !given[p] {
			given[p] = true
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

// freeRange finds n consecutive free ports (bin/test's listeners are base, base+1, ...).
func freeRange(t *testing.T, n int) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 200 {
		base := 10000 + rand.IntN(20000) // below the ephemeral range, so outgoing connections do not take them
		ok := true
		var held []net.Listener
		for i := range n {
			if given[base+i] {
				ok = false
				break
			}
			l, err := net.Listen("tcp", fmt.Sprintf(":%d", base+i))
			if err != nil {
				ok = false
				break
			}
			held = append(held, l)
		}
		for _, l := range held {
			l.Close()
		}
		if ok {
			for i := range n {
				given[base+i] = true
			}
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// mode is one run of integration.sh: XDS=xds with bin/test's extra flags.
type mode struct {
	xds   string
	flags []string
}

func (m mode) name() string {
	return strings.Join(append([]string{m.xds}, m.flags...), "")
}

func TestGoControlPlaneIntegration(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs go-control-plane's integration test (about a minute)")
	}
	work := t.TempDir()
	build(t, work)
	modes := []mode{
		{xds: "ads"}, {xds: "xds"}, {xds: "rest"}, {xds: "delta"}, {xds: "delta-ads"}, {xds: "xds", flags: []string{"-mux"}},
		{xds: "ads", flags: []string{"--tls"}}, {xds: "xds", flags: []string{"--tls"}}, {xds: "rest", flags: []string{"--tls"}},
		{xds: "delta", flags: []string{"--tls"}}, {xds: "delta-ads", flags: []string{"--tls"}},
	}
	sem := make(chan struct{}, 4) // the runs mostly wait; four at a time keeps the suite near a minute
	for _, m := range modes {
		t.Run(m.name(), func(t *testing.T) {
			t.Parallel()
			sem <- struct{}{}
			defer func() { <-sem }()
			runMode(t, work, m)
		})
	}
}

// runMode runs one mode: the upstream echo server, outrider on the rewritten sample bootstrap, and
// bin/test (the control plane, the ALS server and the HTTP checks), whose exit status is the verdict.
func runMode(t *testing.T, work string, m mode) {
	scoped := os.Getenv("CONF_SCOPED") != "0"
	listeners := 4 // 2 HTTP (RDS) + 2 TCP
	var extra []string
	if scoped {
		listeners += 2 // SRDS
		if m.xds == "delta" {
			listeners += 2 // VHDS, delta only
		}
	} else {
		extra = []string{"-scopedhttp=0", "-vhdshttp=0"}
	}
	pXDS, pGW, pALS, pUp, pAdmin := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	base := freeRange(t, listeners)
	runtimes := "1"
	if m.xds == "ads" {
		runtimes = "2"
	}

	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(work, "sample", "bootstrap-"+m.xds+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	boot := strings.NewReplacer(
		"port_value: 18000", fmt.Sprintf("port_value: %d", pXDS),
		"port_value: 18001", fmt.Sprintf("port_value: %d", pGW),
		"port_value: 18090", fmt.Sprintf("port_value: %d", pALS),
		"port_value: 19000", fmt.Sprintf("port_value: %d", pAdmin),
	).Replace(string(src))
	bootPath := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(bootPath, []byte(boot), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const message = "Hi, there!\n"
	var upLog, proxyLog, testLog bytes.Buffer
	up := exec.CommandContext(ctx, filepath.Join(work, "bin", "upstream"), fmt.Sprintf("-upstream=%d", pUp), "-message="+message)
	up.Stdout, up.Stderr = &upLog, &upLog
	proxy := exec.CommandContext(ctx, filepath.Join(work, "bin", "outrider"), "-c", bootPath, "--drain-time-s", "1")
	proxy.Stdout, proxy.Stderr = &proxyLog, &proxyLog
	args := append([]string{"--xds=" + m.xds, "--runtimes=" + runtimes, "-debug", "-message=" + message,
		fmt.Sprintf("-port=%d", pXDS), fmt.Sprintf("-gateway=%d", pGW), fmt.Sprintf("-upstream=%d", pUp),
		fmt.Sprintf("-base=%d", base), fmt.Sprintf("-als=%d", pALS)}, extra...)
	args = append(args, m.flags...)
	cp := exec.CommandContext(ctx, filepath.Join(work, "bin", "test"), args...)
	cp.Stdout, cp.Stderr = &testLog, &testLog

	for _, c := range []*exec.Cmd{up, proxy} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	stop := func(c *exec.Cmd) {
		_ = c.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
	err = cp.Run()
	stop(proxy)
	stop(up)
	if err != nil {
		t.Fatalf("bin/test %s: %v\n--- bin/test:\n%s\n--- outrider:\n%s", strings.Join(args, " "), err,
			tail(testLog.String(), 40), tail(proxyLog.String(), 40))
	}
	out := testLog.String()
	if !strings.Contains(out, "Test for "+m.xds+" passed!") {
		t.Fatalf("bin/test exited 0 without passing:\n%s", tail(out, 40))
	}
	// The access log service got the HTTP listeners' entries through the http_grpc logger.
	if !strings.Contains(out, "[echo") {
		t.Errorf("the ALS server logged no entry from outrider:\n%s", tail(out, 40))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"go/build"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// spireBinary finds a SPIRE v1.13.3 binary on $PATH or in $(go env GOPATH)/bin,
// where .ci/run installs it; "" when missing.
func spireBinary(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		gopath = build.Default.GOPATH
	}
	p := filepath.Join(strings.Split(gopath, string(os.PathListSeparator))[0], "bin", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// spire is a running SPIRE server and agent for one test.
type spire struct {
	t                   *testing.T
	dir                 string
	serverBin, agentBin string
	serverSock          string
	AgentSock           string // the Workload API (and SDS) socket
}

func (s *spire) start(name string, args ...string) {
	s.t.Helper()
	logf, err := os.Create(filepath.Join(s.dir, filepath.Base(args[0])+"-"+name+".log"))
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("%s: %v", name, err)
	}
	s.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if s.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			s.t.Logf("%s log:\n%s", name, tail(b, 4000))
		}
	})
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// cli runs a spire-server command against the server's admin socket.
func (s *spire) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	i := 0 // the flag goes after the (sub)command words
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		i++
	}
	args = append(args[:i:i], append([]string{"-socketPath", s.serverSock}, args[i:]...)...)
	out, err := exec.CommandContext(ctx, s.serverBin, args...).CombinedOutput()
	return string(out), err
}

// startSPIRE runs spire-server (join_token node attestation, in-memory
// keys, sqlite in a temp dir) and a spire-agent attested with a join token
// (unix workload attestation), and registers one workload entry per ID for
// the test's uid with the given X.509-SVID TTL. It returns once the agent's
// Workload API serves every ID.
func startSPIRE(t *testing.T, ttl time.Duration, ids ...string) *spire {
	t.Helper()
	s := &spire{t: t, serverBin: spireBinary("spire-server"), agentBin: spireBinary("spire-agent")}
	if s.serverBin == "" || s.agentBin == "" {
		t.Skip("spire-server and spire-agent (v1.13.3) are not installed in $(go env GOPATH)/bin; .ci/run installs them " +
			"(go get -tool github.com/spiffe/spire/cmd/spire-server@v1.13.3 in a scratch module, then go install)")
	}
	dir, err := os.MkdirTemp("", "spire") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s.dir = dir
	s.serverSock, s.AgentSock = filepath.Join(dir, "server.sock"), filepath.Join(dir, "agent.sock")

	// SPIRE's agent needs the server's port in its config: take one the
	// kernel chose (port 0) and hand it over.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	serverConf := fmt.Sprintf(`
server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = "example.org"
  data_dir = %q
  log_level = "INFO"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1h"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
`, port, s.serverSock, filepath.Join(dir, "server-data"), filepath.Join(dir, "datastore.sqlite3"))
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s.start("server", s.serverBin, "run", "-config", write("server.conf", serverConf))
	var out string
	deadline := time.Now().Add(60 * time.Second)
	for {
		if out, err = s.cli("healthcheck"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spire-server not healthy within 60s: %v %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err = s.cli("token", "generate", "-spiffeID", "spiffe://example.org/agent", "-ttl", "600")
	m := regexp.MustCompile(`Token: (\S+)`).FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("token generate: %v %s", err, out)
	}
	token := m[1]
	for _, id := range ids {
		if out, err := s.cli("entry", "create", "-parentID", "spiffe://example.org/agent", "-spiffeID", id,
			"-selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "-x509SVIDTTL", fmt.Sprint(int(ttl.Seconds()))); err != nil {
			t.Fatalf("entry create %s: %v %s", id, err, out)
		}
	}
	agentConf := fmt.Sprintf(`
agent {
  data_dir = %q
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = "example.org"
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(dir, "agent-data"), port, s.AgentSock)
	s.start("agent", s.agentBin, "run", "-config", write("agent.conf", agentConf), "-joinToken", token)

	// The agent serves the entries after attesting and syncing (every 5 s).
	want := strings.Join(sortedCopy(ids), " ")
	got := ""
	deadline = time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		got = s.svidIDs()
		if got == want {
			return s
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("SPIRE agent Workload API: SVIDs %q, want %q", got, want)
	return nil
}

// svidIDs lists the SPIFFE IDs the Workload API gives this process, or an error.
func (s *spire) svidIDs() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	xc, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+s.AgentSock))
	if err != nil {
		return "error: " + err.Error()
	}
	var ids []string
	for _, sv := range xc.SVIDs {
		ids = append(ids, sv.ID.String())
	}
	sort.Strings(ids)
	return strings.Join(ids, " ")
}

func sortedCopy(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}

// TestSPIREEndToEnd runs a real SPIRE server and agent. A server sidecar
// takes its SVID and bundle from the agent's SDS (an envoy_grpc cluster to
// the agent's socket, as Envoy+SPIRE bootstraps do) and requires the client
// sidecar's SPIFFE ID; one client sidecar uses SPIRE's SDS too, another the
// Workload API directly (--spiffe-workload-api). Requests succeed through
// both, a workload with another SPIFFE ID is refused, and the short-lived
// SVIDs rotate into new handshakes while traffic keeps flowing.
func TestSPIREEndToEnd(t *testing.T) {
	const (
		clientID   = "spiffe://example.org/client"
		serverID   = "spiffe://example.org/server"
		intruderID = "spiffe://example.org/intruder"
		ttl        = 20 * time.Second // SPIRE's agent renews at half the lifetime
	)
	sp := startSPIRE(t, ttl, clientID, serverID, intruderID)
	pipe := spireAgentCluster(sp.AgentSock)
	opts := server.Options{DrainTime: time.Second, DrainImmediate: true}

	srv := servertest.StartOpts(t, serverSidecarYAML(serverID, "spiffe://example.org", spireSDSConfig, clientID, appServer(t), pipe), opts)
	backend := portOf(t, srv.Addr("mtls"))
	viaSDS := servertest.StartOpts(t, clientSidecarYAML(clientID, "ROOTCA", spireSDSConfig, serverID, backend, pipe), opts)
	direct := opts
	direct.SPIFFEWorkloadAPI = "unix://" + sp.AgentSock
	viaWorkloadAPI := servertest.StartOpts(t, clientSidecarYAML(clientID, "ALL", "", serverID, backend, ""), direct)
	intruder := servertest.StartOpts(t, clientSidecarYAML(intruderID, "ROOTCA", spireSDSConfig, serverID, backend, pipe), opts)

	for name, p := range map[string]*servertest.Proxy{"SDS": viaSDS, "Workload API": viaWorkloadAPI} {
		eventually(t, "request through the client sidecar using "+name, func() string {
			code, body := getThrough(p.URL("out", "/"))
			return fmt.Sprint(code, " ", body)
		}, "200 app says hi")
	}
	if v := srv.Stat("sds." + serverID + ".update_success"); v < 1 {
		t.Errorf("sds.%s.update_success = %d", serverID, v)
	}

	// The intruder has a valid SVID of the trust domain, but not the ID the
	// server requires.
	const sanFail = "listener.127.0.0.1_0.ssl.fail_verify_san"
	eventually(t, "intruder's SVID arrived", func() string {
		return fmt.Sprint(intruder.Stat("sds."+intruderID+".update_success") > 0)
	}, "true")
	// Each try must be refused; the refusal must be the server's (its
	// fail_verify_san), which a try made before the intruder's sidecar has
	// the ROOTCA bundle too would not reach.
	before := srv.Stat(sanFail)
	eventually(t, "intruder refused and the refusal counted by the server sidecar", func() string {
		code, body := getThrough(intruder.URL("out", "/"))
		if code != 503 {
			t.Fatalf("intruder: %d %s, want 503", code, body)
		}
		return fmt.Sprint(srv.Stat(sanFail) > before)
	}, "true")

	// Rotation: the server's SVID changes within the TTL; new handshakes
	// present the new one, and requests keep succeeding meanwhile.
	first := presentedSerial(srv.Addr("mtls"), sp)
	if first != serverSerial(t, sp) {
		t.Logf("server sidecar presents %s, the Workload API already has %s", first, serverSerial(t, sp))
	}
	deadline := time.Now().Add(3 * ttl)
	failures, requests := 0, 0
	rotated := ""
	for time.Now().Before(deadline) && rotated == "" {
		for _, p := range []*servertest.Proxy{viaSDS, viaWorkloadAPI} {
			requests++
			if code, body := getThrough(p.URL("out", "/")); code != 200 {
				failures++
				t.Logf("request during rotation: %d %s", code, body)
			}
		}
		// Rotated: a new handshake sees a new SVID, the one SPIRE issued last.
		if s := presentedSerial(srv.Addr("mtls"), sp); s != first && s == serverSerial(t, sp) {
			rotated = s
		}
		time.Sleep(200 * time.Millisecond)
	}
	if rotated == "" {
		t.Fatalf("server sidecar still presents serial %s after %v", first, 3*ttl)
	}
	t.Logf("server SVID rotated from serial %s to %s; %d requests during rotation", first, rotated, requests)
	if failures > 0 {
		t.Errorf("%d of %d requests failed during rotation", failures, requests)
	}
	if v := srv.Stat("listener.127.0.0.1_0.server_ssl_socket_factory.ssl_context_update_by_sds"); v < 1 {
		t.Errorf("ssl_context_update_by_sds = %d after rotation", v)
	}
	for name, p := range map[string]*servertest.Proxy{"SDS": viaSDS, "Workload API": viaWorkloadAPI} {
		if code, body := getThrough(p.URL("out", "/")); code != 200 {
			t.Errorf("%s after rotation: %d %s", name, code, body)
		}
	}
}

// serverSerial is the serial of the server SVID the Workload API holds now.
func serverSerial(t *testing.T, sp *spire) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	xc, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+sp.AgentSock))
	if err != nil {
		t.Fatal(err)
	}
	for _, sv := range xc.SVIDs {
		if sv.ID.String() == "spiffe://example.org/server" {
			return sv.Certificates[0].SerialNumber.String()
		}
	}
	t.Fatal("no server SVID")
	return ""
}

// presentedSerial is the serial of the certificate the server sidecar
// presents to a new handshake made with the client's current SVID.
func presentedSerial(addr string, sp *spire) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	xc, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+sp.AgentSock))
	if err != nil {
		return "error: " + err.Error()
	}
	for _, sv := range xc.SVIDs {
		if sv.ID.String() != "spiffe://example.org/client" {
			continue
		}
		certs, key, err := sv.Marshal()
		if err != nil {
			return "error: " + err.Error()
		}
		cert, err := tls.X509KeyPair(certs, key)
		if err != nil {
			return "error: " + err.Error()
		}
		return peerLeafSerial(addr, cert)
	}
	return "error: no client SVID"
}

package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// mountAdmin registers the server's own admin endpoints; the admin package
// provides /, /help, /logging and /stats.
func (s *Server) mountAdmin() {
	a := s.admin
	a.Handle("/ready", "print server state, return 200 if LIVE, otherwise return 503", false, s.handleReady)
	a.Handle("/server_info", "print server version/status information", false, s.handleServerInfo)
	a.Handle("/certs", "print certs on machine", false, s.handleCerts)
	a.Handle("/clusters", "upstream cluster status", false, s.handleClusters)
	a.Handle("/listeners", "print listener info", false, s.handleListeners)
	a.Handle("/config_dump", "dump current Envoy configs", false, s.handleConfigDump)
	a.Handle("/healthcheck/fail", "cause the server to fail health checks", true, func(w http.ResponseWriter, r *http.Request) {
		s.hcFailed.Store(true)
		s.stats.Gauge("server.live").Set(0) // Envoy's failHealthcheck: live_ is !failed
		fmt.Fprint(w, "OK\n")
	})
	a.Handle("/healthcheck/ok", "cause the server to pass health checks", true, func(w http.ResponseWriter, r *http.Request) {
		s.hcFailed.Store(false)
		s.stats.Gauge("server.live").Set(1)
		fmt.Fprint(w, "OK\n")
	})
	a.Handle("/runtime", "print runtime values", false, s.handleRuntime)
	a.Handle("/runtime_modify", "Adds or modifies runtime values as passed in query parameters. To delete a previously added key, use an empty string as the value. Note that deletion only applies to overrides added via this endpoint; values loaded from disk can be modified via override but not deleted. E.g. ?key1=value1&key2=value2...", true, s.handleRuntimeModify)
	a.Handle("/drain_listeners", "drain listeners (?graceful, ?inboundonly)", true, s.handleDrainListeners)
	a.HandleProfiling(s.opts.Bootstrap.GetAdmin().GetProfilePath())
	a.Handle("/quitquitquit", "exit the server", true, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "OK\n")
		s.Quit()
	})
}

// HealthCheckFailed reports whether /healthcheck/fail is in force.
func (s *Server) HealthCheckFailed() bool { return s.hcFailed.Load() }

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	st := State(s.state.Load())
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	if st != Live {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, st.String())
}

func (s *Server) handleServerInfo(w http.ResponseWriter, r *http.Request) {
	up := durationpb.New(time.Since(s.started).Truncate(time.Second))
	node := proto.Clone(s.opts.Bootstrap.GetNode()).(*corev3.Node)
	if node == nil {
		node = &corev3.Node{}
	}
	info := &adminv3.ServerInfo{
		Version:            "outrider/" + Version,
		State:              adminv3.ServerInfo_State(adminStateOf(State(s.state.Load()))),
		HotRestartVersion:  "disabled",
		UptimeCurrentEpoch: up,
		UptimeAllEpochs:    up,
		CommandLineOptions: &adminv3.CommandLineOptions{
			ConfigPath:        s.opts.ConfigPath,
			ServiceCluster:    s.opts.ServiceCluster,
			ServiceNode:       s.opts.ServiceNode,
			ServiceZone:       s.opts.ServiceZone,
			Concurrency:       uint32(s.opts.Concurrency),
			DrainTime:         durationpb.New(s.drainTime()),
			Mode:              adminv3.CommandLineOptions_Serve,
			LogLevel:          strings.ToLower(s.level.Level().String()),
			DisableHotRestart: true,
		},
		Node: node,
	}
	writeJSON(w, info)
}

func adminStateOf(st State) int32 {
	switch st {
	case Live:
		return int32(adminv3.ServerInfo_LIVE)
	case Draining:
		return int32(adminv3.ServerInfo_DRAINING)
	}
	return int32(adminv3.ServerInfo_INITIALIZING)
}

func writeJSON(w http.ResponseWriter, m proto.Message) {
	// Envoy prints proto field names, with defaults, indented; protojson's
	// own indentation is deliberately unstable, so indent with encoding/json.
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}.Marshal(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", " "); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out.Bytes())
}

func (s *Server) handleListeners(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("format") == "json" {
		out := &adminv3.Listeners{}
		for _, l := range s.Listeners() {
			out.ListenerStatuses = append(out.ListenerStatuses, &adminv3.ListenerStatus{Name: l.Name, LocalAddress: socketAddr(l.Addr())})
		}
		writeJSON(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	for _, l := range s.Listeners() {
		addr := "<unbound>"
		if a := l.Addr(); a != nil {
			addr = a.String()
		}
		fmt.Fprintf(w, "%s::%s\n", l.Name, addr)
	}
}

func (s *Server) handleDrainListeners(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	inbound := q.Has("inboundonly")
	if q.Has("graceful") {
		s.StartDrain(inbound)
		go func() {
			time.Sleep(s.drainTime())
			s.stopListeners(inbound)
		}()
	} else {
		s.stopListeners(inbound)
		s.StartDrain(inbound)
	}
	fmt.Fprint(w, "OK\n")
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

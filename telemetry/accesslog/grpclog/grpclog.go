// Package grpclog is Envoy's gRPC access log service client: envoy.access_loggers.http_grpc and
// envoy.access_loggers.tcp_grpc stream HTTPAccessLogEntry / TCPAccessLogEntry batches over
// StreamAccessLogs (envoy.service.accesslog.v3) to the cluster their grpc_service names.
// Log only appends to a bounded buffer that one goroutine per logger flushes (at buffer_size_bytes or
// every buffer_flush_interval), so a slow or absent service makes entries drop
// (access_logs.grpc_access_log.logs_dropped) and never blocks a request.
package grpclog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	alssvcv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/accesslog"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func init() {
	accesslog.Register("envoy.access_loggers.http_grpc", []string{fullName(&grpcalsv3.HttpGrpcAccessLogConfig{})}, newHTTP)
	accesslog.Register("envoy.access_loggers.tcp_grpc", []string{fullName(&grpcalsv3.TcpGrpcAccessLogConfig{})}, newTCP)
}

func fullName(m proto.Message) string { return string(m.ProtoReflect().Descriptor().FullName()) }

// Envoy's defaults for buffer_size_bytes and buffer_flush_interval.
const (
	defaultBufferSize    = 16384
	defaultFlushInterval = time.Second
	// maxPendingFactor bounds what waits for a flush to this many times buffer_size_bytes (at least
	// minMaxPending): beyond it entries are dropped, as Envoy drops above its stream's high watermark.
	maxPendingFactor = 16
	minMaxPending    = 1 << 20
)

const streamMethod = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"

func newHTTP(cfg *anypb.Any, b *accesslog.Builder) (accesslog.Logger, error) {
	c := &grpcalsv3.HttpGrpcAccessLogConfig{}
	if err := unmarshal(cfg, c); err != nil {
		return nil, err
	}
	if err := confcheck.Fields(c, "", "common_config", "additional_request_headers_to_log",
		"additional_response_headers_to_log", "additional_response_trailers_to_log"); err != nil {
		return nil, err
	}
	l, err := newLogger(c.GetCommonConfig(), b, false)
	if err != nil {
		return nil, fmt.Errorf("common_config.%w", err)
	}
	l.reqHeaders = lower(c.GetAdditionalRequestHeadersToLog())
	l.respHeaders = lower(c.GetAdditionalResponseHeadersToLog())
	l.respTrailers = lower(c.GetAdditionalResponseTrailersToLog())
	return l, nil
}

func newTCP(cfg *anypb.Any, b *accesslog.Builder) (accesslog.Logger, error) {
	c := &grpcalsv3.TcpGrpcAccessLogConfig{}
	if err := unmarshal(cfg, c); err != nil {
		return nil, err
	}
	if err := confcheck.Fields(c, "", "common_config"); err != nil {
		return nil, err
	}
	l, err := newLogger(c.GetCommonConfig(), b, true)
	if err != nil {
		return nil, fmt.Errorf("common_config.%w", err)
	}
	return l, nil
}

func unmarshal(cfg *anypb.Any, m proto.Message) error {
	if cfg == nil {
		return errors.New("common_config: required")
	}
	if err := cfg.UnmarshalTo(m); err != nil {
		return fmt.Errorf("decoding %s: %w", fullName(m), err)
	}
	if v, ok := m.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Logger is one gRPC access log: a buffer of entries and the goroutine that streams them.
type Logger struct {
	tcp                                   bool
	logName                               string
	node                                  *corev3.Node // sent in the first message of each stream
	reqHeaders, respHeaders, respTrailers []string

	bufferSize, maxPending int
	interval               time.Duration
	dial                   func(ctx context.Context) (grpc.ClientConnInterface, error)
	log                    *slog.Logger
	written, dropped       *stats.Counter

	mu           sync.Mutex
	http         []*alsdatav3.HTTPAccessLogEntry
	tcpEntries   []*alsdatav3.TCPAccessLogEntry
	pendingBytes int
	closed       bool

	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	closeMu sync.Once
}

func newLogger(c *grpcalsv3.CommonGrpcAccessLogConfig, b *accesslog.Builder, tcp bool) (*Logger, error) {
	if c == nil {
		return nil, errors.New("required")
	}
	if err := confcheck.Fields(c, "", "log_name", "grpc_service", "transport_api_version", "buffer_flush_interval",
		"buffer_size_bytes"); err != nil {
		return nil, err
	}
	if c.GetTransportApiVersion() != corev3.ApiVersion_V3 && c.GetTransportApiVersion() != corev3.ApiVersion_AUTO {
		return nil, fmt.Errorf("transport_api_version: %s is not supported", c.GetTransportApiVersion())
	}
	opts := b.Options()
	gs := c.GetGrpcService()
	if gs.GetEnvoyGrpc() == nil {
		return nil, errors.New("grpc_service: only envoy_grpc is supported by outrider yet")
	}
	if err := confcheck.Fields(gs, "grpc_service", "envoy_grpc", "timeout"); err != nil {
		return nil, err
	}
	if err := confcheck.Fields(gs.GetEnvoyGrpc(), "grpc_service.envoy_grpc", "cluster_name", "authority"); err != nil {
		return nil, err
	}
	name := gs.GetEnvoyGrpc().GetClusterName()
	if opts.Clusters == nil {
		return nil, errors.New("grpc_service.envoy_grpc.cluster_name: no cluster manager to reach the access log service")
	}
	if opts.Clusters.Get(name) == nil {
		return nil, fmt.Errorf("grpc_service.envoy_grpc.cluster_name: unknown cluster %q", name)
	}
	st := opts.Stats
	if st == nil {
		st = stats.NewStore()
	}
	sc := st.Scope("access_logs.grpc_access_log")
	l := &Logger{
		tcp: tcp, logName: c.GetLogName(), node: opts.Clusters.Node,
		bufferSize: defaultBufferSize, interval: defaultFlushInterval,
		dial:    ClusterDialer(opts.Clusters, name, gs.GetEnvoyGrpc().GetAuthority()),
		log:     opts.Log,
		written: sc.Counter("logs_written"), dropped: sc.Counter("logs_dropped"),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if v := c.GetBufferSizeBytes(); v != nil {
		l.bufferSize = int(v.GetValue())
	}
	if d := c.GetBufferFlushInterval(); d != nil && d.AsDuration() > 0 {
		l.interval = d.AsDuration()
	}
	l.maxPending = max(l.bufferSize*maxPendingFactor, minMaxPending)
	go l.run()
	return l, nil
}

// ClusterDialer returns a dial function for a gRPC client connection to the named cluster: each
// connection goes to a host the cluster's load balancer picks, through its transport socket (TLS).
// authority, when set, is the :authority of the calls; the cluster name otherwise, as Envoy sends.
func ClusterDialer(m *upstream.Manager, name, authority string) func(ctx context.Context) (grpc.ClientConnInterface, error) {
	if authority == "" {
		authority = name
	}
	return func(context.Context) (grpc.ClientConnInterface, error) {
		return grpc.NewClient("passthrough:///"+name,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority(authority),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				return m.DialCluster(ctx, name)
			}))
	}
}

// Log converts ctx into an entry and queues it; it never blocks on the network.
func (l *Logger) Log(ctx *formatter.Context) {
	var size int
	var he *alsdatav3.HTTPAccessLogEntry
	var te *alsdatav3.TCPAccessLogEntry
	if l.tcp {
		te = tcpEntry(ctx)
		size = proto.Size(te)
	} else {
		he = l.httpEntry(ctx)
		size = proto.Size(he)
	}
	l.mu.Lock()
	if l.closed || l.pendingBytes+size > l.maxPending {
		l.mu.Unlock()
		l.dropped.Inc()
		return
	}
	if l.tcp {
		l.tcpEntries = append(l.tcpEntries, te)
	} else {
		l.http = append(l.http, he)
	}
	l.pendingBytes += size
	full := l.pendingBytes >= l.bufferSize
	l.mu.Unlock()
	l.written.Inc()
	if full {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// Close flushes what is buffered (for at most a second) and ends the stream. It is idempotent.
func (l *Logger) Close() error {
	l.closeMu.Do(func() {
		close(l.stop)
		<-l.done
	})
	return nil
}

// take removes the buffered entries as one message, nil when there are none.
func (l *Logger) take() (*alssvcv3.StreamAccessLogsMessage, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	msg := &alssvcv3.StreamAccessLogsMessage{}
	n := 0
	if l.tcp {
		if len(l.tcpEntries) == 0 {
			return nil, 0
		}
		n = len(l.tcpEntries)
		msg.LogEntries = &alssvcv3.StreamAccessLogsMessage_TcpLogs{TcpLogs: &alssvcv3.StreamAccessLogsMessage_TCPAccessLogEntries{LogEntry: l.tcpEntries}}
		l.tcpEntries = nil
	} else {
		if len(l.http) == 0 {
			return nil, 0
		}
		n = len(l.http)
		msg.LogEntries = &alssvcv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alssvcv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: l.http}}
		l.http = nil
	}
	l.pendingBytes = 0
	return msg, n
}

// run flushes on every interval and whenever the buffer fills, keeping one stream open.
func (l *Logger) run() {
	defer close(l.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var conn grpc.ClientConnInterface
	var stream grpc.ClientStream
	closeConn := func() {
		if stream != nil {
			_ = stream.CloseSend()
			stream = nil
		}
		if c, ok := conn.(interface{ Close() error }); ok {
			_ = c.Close()
		}
		conn = nil
	}
	defer closeConn()
	flush := func() {
		msg, n := l.take()
		if msg == nil {
			return
		}
		if stream == nil {
			var err error
			if conn == nil {
				if conn, err = l.dial(ctx); err != nil {
					l.dropped.Add(uint64(n))
					l.log.Warn("grpc access log: dial", "log_name", l.logName, "err", err)
					return
				}
			}
			// The stream lives until Close; its creation fails fast when the cluster cannot be reached
			// (the cluster's connect_timeout bounds the dial).
			stream, err = conn.NewStream(ctx, &grpc.StreamDesc{StreamName: "StreamAccessLogs", ClientStreams: true}, streamMethod)
			if err != nil {
				stream = nil
				l.dropped.Add(uint64(n))
				l.log.Warn("grpc access log: stream", "log_name", l.logName, "err", err)
				closeConn()
				return
			}
			msg.Identifier = &alssvcv3.StreamAccessLogsMessage_Identifier{Node: l.node, LogName: l.logName}
		}
		if err := stream.SendMsg(msg); err != nil {
			l.dropped.Add(uint64(n))
			l.log.Warn("grpc access log: send", "log_name", l.logName, "err", err)
			closeConn()
		}
	}
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			l.mu.Lock()
			l.closed = true
			l.mu.Unlock()
			// A last flush, given a second: Close must not wait on a service that is down.
			stopTimer := time.AfterFunc(time.Second, cancel)
			flush()
			stopTimer.Stop()
			return
		case <-t.C:
			flush()
		case <-l.kick:
			flush()
		}
	}
}

func lower(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		b := []byte(n)
		for j, c := range b {
			if 'A' <= c && c <= 'Z' {
				b[j] = c + 'a' - 'A'
			}
		}
		out[i] = string(b)
	}
	return out
}

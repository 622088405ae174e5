// Command outrider runs an Envoy v3 bootstrap with Envoy's command line.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	_ "github.com/outrider-proxy/outrider/filters/all"
	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// flags are Envoy's command-line options. Options that do not apply to
// outrider are accepted and noted in the log, never a failure.
type flags struct {
	configPath, configYAML, mode, logLevel, componentLogLevel, logFormat, logPath string
	serviceCluster, serviceNode, serviceZone, drainStrategy, adminAddressPath     string
	localAddressIPVersion                                                         string
	drainTimeS, parentShutdownTimeS, concurrency, baseID, restartEpoch            int
	cpusetThreads, disableHotRestart, version                                     bool
	spiffeWorkloadAPI                                                             string
	keepStartupPages                                                              bool
	ignored                                                                       map[string]*string
	ignoredBool                                                                   map[string]*bool
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{ignored: map[string]*string{}, ignoredBool: map[string]*bool{}}
	fs := flag.NewFlagSet("outrider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	str := func(p *string, def, usage string, names ...string) {
		for _, n := range names {
			fs.StringVar(p, n, def, usage)
		}
	}
	str(&f.configPath, "", "path to the bootstrap (YAML, JSON, .pb or .pb_text)", "c", "config-path")
	str(&f.configYAML, "", "bootstrap YAML merged over --config-path", "config-yaml")
	str(&f.mode, "serve", "serve or validate", "mode")
	str(&f.logLevel, "info", "log level: trace, debug, info, warning/warn, error, critical, off", "l", "log-level")
	str(&f.componentLogLevel, "", "per-component levels (component:level,...); accepted, the global level applies", "component-log-level")
	str(&f.logFormat, "", "Envoy log format; accepted, outrider logs with slog text", "log-format")
	str(&f.logPath, "", "write logs to this file", "log-path")
	str(&f.serviceCluster, "", "node cluster (node.cluster)", "service-cluster")
	str(&f.serviceNode, "", "node id (node.id)", "service-node")
	str(&f.serviceZone, "", "node zone (node.locality.zone)", "service-zone")
	str(&f.drainStrategy, "gradual", "gradual or immediate", "drain-strategy")
	str(&f.adminAddressPath, "", "write the bound admin address to this file", "admin-address-path")
	str(&f.localAddressIPVersion, "v4", "v4 or v6", "local-address-ip-version")
	str(&f.spiffeWorkloadAPI, "", "SPIFFE Workload API address (unix:///path): its SVIDs and bundles serve SDS secret configs without an sds_config, by SPIRE's names (default, ROOTCA, ALL, spiffe://...)", "spiffe-workload-api")
	fs.IntVar(&f.drainTimeS, "drain-time-s", 600, "seconds to drain connections on shutdown")
	fs.IntVar(&f.parentShutdownTimeS, "parent-shutdown-time-s", 900, "hot restart only; accepted")
	fs.IntVar(&f.concurrency, "concurrency", 0, "worker parallelism (GOMAXPROCS); 0 = all CPUs")
	fs.IntVar(&f.baseID, "base-id", 0, "hot restart only; accepted")
	fs.IntVar(&f.restartEpoch, "restart-epoch", 0, "hot restart only; accepted")
	fs.BoolVar(&f.cpusetThreads, "cpuset-threads", false, "size concurrency by the CPU set (Go does this by default)")
	fs.BoolVar(&f.disableHotRestart, "disable-hot-restart", false, "outrider has no hot restart; accepted")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	fs.BoolVar(&f.keepStartupPages, "keep-startup-pages", false, "keep the executable's pages that start-up read resident (by default they are given back once listening)")
	for _, n := range []string{"file-flush-interval-msec", "hot-restart-version", "socket-path", "socket-mode",
		"base-id-path", "stats-tag", "disable-extensions", "bootstrap-version", "drain-strategy-interval"} {
		p := new(string)
		f.ignored[n] = p
		fs.StringVar(p, n, "", "accepted for Envoy compatibility; no effect")
	}
	for _, n := range []string{"allow-unknown-static-fields", "reject-unknown-dynamic-fields", "ignore-unknown-dynamic-fields",
		"enable-mutex-tracing", "use-dynamic-base-id", "enable-fine-grain-logging", "enable-core-dump", "skip-hot-restart-on-no-parent",
		"skip-hot-restart-parent-stats", "log-format-escaped", "enable-nodelay"} {
		p := new(bool)
		f.ignoredBool[n] = p
		fs.BoolVar(p, n, false, "accepted for Envoy compatibility; no effect")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return f, nil
}

// parseLevel maps Envoy's level names to slog levels.
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "trace", "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warning", "warn":
		return slog.LevelWarn, nil
	case "error", "critical", "off":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("invalid log level %q (want trace, debug, info, warning, error, critical or off)", s)
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, stderr)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintln(stderr, "outrider:", err)
		return 1
	}
	if f.version {
		fmt.Fprintf(stdout, "outrider version: %s/%s/Go/%s\n", server.Version, runtime.GOARCH, runtime.Version())
		return 0
	}
	lvl, err := parseLevel(f.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "outrider:", err)
		return 1
	}
	level := &slog.LevelVar{}
	level.Set(lvl)
	logOut := stderr
	if f.logPath != "" {
		lf, err := os.OpenFile(f.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(stderr, "outrider: --log-path:", err)
			return 1
		}
		defer lf.Close()
		logOut = lf
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	noteIgnored(f, log)

	if f.configPath == "" && f.configYAML == "" {
		fmt.Fprintln(stderr, "outrider: no configuration: give -c/--config-path or --config-yaml")
		return 1
	}
	b, err := bootstrap.Load(bootstrap.Source{Path: f.configPath, YAML: f.configYAML})
	if err != nil {
		fmt.Fprintln(stderr, "outrider:", err)
		return 1
	}
	applyNodeFlags(b, f)
	if f.concurrency > 0 {
		runtime.GOMAXPROCS(f.concurrency)
	}
	srv, err := server.New(server.Options{
		Bootstrap: b, ConfigPath: f.configPath, LogLevel: level, Log: log,
		DrainTime:        time.Duration(f.drainTimeS) * time.Second,
		DrainImmediate:   f.drainStrategy == "immediate",
		AdminAddressPath: f.adminAddressPath,
		ServiceCluster:   f.serviceCluster, ServiceNode: f.serviceNode, ServiceZone: f.serviceZone,
		Concurrency: runtime.GOMAXPROCS(0), CommandLine: args,
		SPIFFEWorkloadAPI: f.spiffeWorkloadAPI,
	})
	if err != nil {
		fmt.Fprintf(stderr, "outrider: %s: %v\n", configName(f), err)
		return 1
	}
	switch f.mode {
	case "validate":
		fmt.Fprintf(stdout, "configuration '%s' OK\n", configName(f))
		return 0
	case "serve":
	default:
		if f.mode != "init_only" {
			fmt.Fprintf(stderr, "outrider: --mode %q: want serve or validate\n", f.mode)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := srv.Start(ctx); err != nil {
		fmt.Fprintf(stderr, "outrider: %s: %v\n", configName(f), err)
		return 1
	}
	if f.mode == "init_only" {
		srv.Shutdown()
		return 0
	}
	if !f.keepStartupPages {
		before, after, err := trimStartupPages()
		log.Debug("start-up pages given back", "executable_rss_kb_before", before, "executable_rss_kb_after", after, "err", err)
	}
	log.Info("outrider started", "version", server.Version, "admin", srv.AdminAddr())
	srv.Run(ctx)
	log.Info("outrider stopped")
	return 0
}

func configName(f *flags) string {
	if f.configPath != "" {
		return f.configPath
	}
	return "--config-yaml"
}

func noteIgnored(f *flags, log *slog.Logger) {
	for n, p := range f.ignored {
		if *p != "" {
			log.Info("flag accepted for Envoy compatibility; it has no effect in outrider", "flag", "--"+n)
		}
	}
	for n, p := range f.ignoredBool {
		if *p {
			log.Info("flag accepted for Envoy compatibility; it has no effect in outrider", "flag", "--"+n)
		}
	}
	if f.componentLogLevel != "" {
		log.Info("--component-log-level accepted; outrider applies the global level to every component", "value", f.componentLogLevel)
	}
	if f.disableHotRestart || f.baseID != 0 || f.restartEpoch != 0 {
		log.Info("outrider has no hot restart; --base-id, --restart-epoch and --disable-hot-restart have no effect")
	}
}

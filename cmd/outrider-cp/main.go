// Command outrider-cp is a demo control plane: it serves the xDS resources
// of one YAML file to every proxy over gRPC (ADS and per-type services) and
// pushes a new version when the file changes. Usage:
//
//	outrider-cp -addr 127.0.0.1:18000 -resources examples/xds-cp/resources.yaml
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/outrider-proxy/outrider/xds/democp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18000", "address to serve xDS on")
	path := flag.String("resources", "examples/xds-cp/resources.yaml", "YAML file of xDS resources")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log.Info("serving xDS", "address", ln.Addr().String(), "resources", *path)
	if err := democp.Serve(ctx, ln, *path, 0, log); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

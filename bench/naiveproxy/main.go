// Command naiveproxy is the naive baseline of the load comparison: a plain
// net/http server whose handler is httputil.ReverseProxy to one upstream.
// It keeps connections to the upstream alive and logs nothing per request.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18084", "listen address")
	upstream := flag.String("upstream", "127.0.0.1:18080", "upstream host:port")
	flag.Parse()
	target := &url.URL{Scheme: "http", Host: *upstream}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
	}
	rp.ErrorLog = log.New(io.Discard, "", 0)
	srv := &http.Server{
		Addr:              *addr,
		Handler:           rp,
		ReadHeaderTimeout: 15 * time.Second,
		IdleTimeout:       300 * time.Second,
	}
	log.Fatal(srv.ListenAndServe())
}

package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestOpenHoldsServedConnections checks that every connection was served one
// request and is still open (the server sees them all as idle, none closed).
func TestOpenHoldsServedConnections(t *testing.T) {
	var reqs, active atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			active.Add(1)
		case http.StateClosed, http.StateHijacked:
			active.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()
	conns, err := open(srv.Listener.Addr().String(), 40, 8, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 40 || reqs.Load() != 40 {
		t.Fatalf("%d conns, %d requests; want 40 each", len(conns), reqs.Load())
	}
	if got := active.Load(); got != 40 {
		t.Errorf("server sees %d open connections, want 40", got)
	}
	for _, c := range conns {
		c.Close()
	}
}

func TestOpenReportsRefusal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conns, err := open(addr, 3, 2, time.Second)
	if err == nil || len(conns) != 0 {
		t.Fatalf("open on a closed port: %d conns, err %v", len(conns), err)
	}
}

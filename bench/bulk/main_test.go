package main

import (
	"io"
	"net"
	"testing"
	"time"
)

func TestGbps(t *testing.T) {
	tests := []struct {
		n    int64
		d    time.Duration
		want float64
	}{
		{125_000_000, time.Second, 1},
		{1_250_000_000, 2 * time.Second, 5},
		{100, 0, 0},
	}
	for _, tt := range tests {
		if got := gbps(tt.n, tt.d); got != tt.want {
			t.Errorf("gbps(%d, %v) = %v, want %v", tt.n, tt.d, got, tt.want)
		}
	}
}

// TestRunBothDirections moves bytes against a local server that speaks the
// bulk protocol and checks the mode byte and the count.
func TestRunBothDirections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	modes := make(chan byte, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				b := make([]byte, 64<<10)
				if _, err := io.ReadFull(c, b[:1]); err != nil {
					return
				}
				modes <- b[0]
				if b[0] == 'u' {
					io.Copy(io.Discard, c)
					return
				}
				for {
					if _, err := c.Write(b); err != nil {
						return
					}
				}
			}()
		}
	}()
	for _, dir := range []string{"up", "down"} {
		n, elapsed, err := run(ln.Addr().String(), dir, 200*time.Millisecond, 1)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		if n < 1<<20 || elapsed < 200*time.Millisecond {
			t.Errorf("%s: moved %d bytes in %v", dir, n, elapsed)
		}
		if m, want := <-modes, map[string]byte{"up": 'u', "down": 'd'}[dir]; m != want {
			t.Errorf("%s: mode byte %q", dir, m)
		}
	}
	if _, _, err := run(ln.Addr().String(), "sideways", time.Millisecond, 1); err == nil {
		t.Error("bad direction accepted")
	}
}

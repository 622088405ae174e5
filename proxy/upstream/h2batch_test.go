package upstream

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpPair is a connected pair of loopback TCP connections.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case server = <-acc:
	case <-time.After(5 * time.Second):
		t.Fatal("accept timed out")
	}
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestBatchConn(t *testing.T) {
	tests := []struct {
		name             string
		writers, records int
		size             int
	}{
		{"one writer", 1, 200, 40},
		{"concurrent writers", 8, 200, 40},
		{"past the high-water mark", 2, 40, 64 << 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, s := tcpPair(t)
			b := newBatchConn(c)
			got := make(chan []byte, 1)
			go func() {
				all, _ := io.ReadAll(s)
				got <- all
			}()
			var wg sync.WaitGroup
			for w := range tc.writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range tc.records {
						rec := bytes.Repeat([]byte{byte('a' + w)}, tc.size)
						copy(rec, fmt.Sprintf("%d:%d;", w, i))
						if _, err := b.Write(rec); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err := b.Close(); err != nil { // flushes, then closes the socket
				t.Fatal(err)
			}
			var all []byte
			select {
			case all = <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("reader timed out")
			}
			if want := tc.writers * tc.records * tc.size; len(all) != want {
				t.Fatalf("read %d bytes, want %d", len(all), want)
			}
			// Each write arrives whole, and each writer's in order.
			next := make([]int, tc.writers)
			for off := 0; off < len(all); off += tc.size {
				rec := all[off : off+tc.size]
				var w, i int
				if _, err := fmt.Sscanf(string(rec), "%d:%d;", &w, &i); err != nil || w >= tc.writers {
					t.Fatalf("record at %d: %q: %v", off, rec[:16], err)
				}
				if i != next[w] || rec[tc.size-1] != byte('a'+w) {
					t.Fatalf("writer %d: record %d at %d, want %d", w, i, off, next[w])
				}
				next[w]++
			}
			if _, err := b.Write([]byte("late")); err == nil {
				t.Fatal("write after Close succeeded")
			}
		})
	}
}

// A failed socket write is sticky: later writes fail.
func TestBatchConnWriteError(t *testing.T) {
	c, _ := tcpPair(t)
	b := newBatchConn(c)
	c.Close() // the socket goes away under the batcher
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = b.Write([]byte("x"))
		if err == nil {
			time.Sleep(time.Millisecond)
		}
	}
	if err == nil {
		t.Fatal("writes kept succeeding on a closed socket")
	}
	if _, err2 := b.Write([]byte("y")); err2 == nil {
		t.Fatal("the write error was not sticky")
	}
	b.Close()
}

package httpinspector

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Result
	}{
		{"empty", "", NeedMore},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", FoundH2},
		{"h2 preface and frames", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04", FoundH2},
		{"h2 preface prefix", "PRI * HTTP/2", NeedMore},
		{"http/1.1", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", FoundHTTP11},
		{"http/1.1 bare LF", "GET /x HTTP/1.1\n", FoundHTTP11},
		{"http/1.0", "GET / HTTP/1.0\r\n", FoundHTTP10},
		{"other version is 1.0", "GET / HTTP/0.9\r\n", FoundHTTP10},
		{"custom method", "PURGE /a HTTP/1.1\r\n", FoundHTTP11},
		{"partial method", "GE", NeedMore},
		{"partial target", "GET /abc", NeedMore},
		{"partial version", "GET / HTTP/1.", NeedMore},
		{"leading CRLF", "\r\nGET / HTTP/1.1\r\n", NotHTTP},
		{"tls client hello", "\x16\x03\x01\x02\x00\x01\x00\x01", NotHTTP},
		{"no version", "GET /\r\n", NotHTTP},
		{"bad version", "GET / HTTX/1.1\r\n", NotHTTP},
		{"method with slash", "GE/T / HTTP/1.1\r\n", NotHTTP},
		{"control char in target", "GET /\x01 HTTP/1.1\r\n", NotHTTP},
		{"space first", " GET / HTTP/1.1\r\n", NotHTTP},
		{"server first text", "SSH-2.0-OpenSSH\r\n", NotHTTP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Detect([]byte(tt.in)); got != tt.want {
				t.Errorf("Detect(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

// TestOnAccept runs the filter on real sockets: the protocol it sets, its
// counters, and the peeked bytes replayed intact.
func TestOnAccept(t *testing.T) {
	tests := []struct {
		name      string
		transport string
		send      []string // written with a pause in between
		wantALPN  []string
		wantStat  string
	}{
		{"http/1.1", "", []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, []string{"http/1.1"}, "http11_found"},
		{"http/1.0 in pieces", "raw_buffer", []string{"GET /a", "bc HTTP/1.0\r\n\r\n"}, []string{"http/1.0"}, "http10_found"},
		{"h2c", "", []string{"PRI * HTTP/2.0\r\n", "\r\nSM\r\n\r\n"}, []string{"h2c"}, "http2_found"},
		{"not http", "", []string{"\x16\x03\x01\x00\x05hello"}, nil, "http_not_found"},
		{"tls left alone", "tls", []string{"GET / HTTP/1.1\r\n\r\n"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := stats.NewStore()
			f := New(NewStats(st.Scope("listener.test.http_inspector")))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					return
				}
				defer c.Close()
				for _, s := range tt.send {
					_, _ = c.Write([]byte(s))
					time.Sleep(20 * time.Millisecond)
				}
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			}()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			info := &streaminfo.Conn{TransportProtocol: tt.transport}
			if err := f.OnAccept(&c, info); err != nil {
				t.Fatalf("OnAccept: %v", err)
			}
			if !slices.Equal(info.ALPN, tt.wantALPN) {
				t.Errorf("ALPN = %q, want %q", info.ALPN, tt.wantALPN)
			}
			for _, name := range []string{"http11_found", "http10_found", "http2_found", "http_not_found", "read_error"} {
				want := uint64(0)
				if name == tt.wantStat {
					want = 1
				}
				if got := st.Scope("listener.test.http_inspector").Counter(name).Value(); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
			all, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read after inspection: %v", err)
			}
			var want string
			for _, s := range tt.send {
				want += s
			}
			if string(all) != want {
				t.Errorf("connection bytes = %q, want %q", all, want)
			}
		})
	}
}

func TestRequestLineTooLong(t *testing.T) {
	st := stats.NewStore()
	f := New(NewStats(st.Scope("l.http_inspector")))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		long := make([]byte, maxInspectSize+10)
		copy(long, "GET /")
		for i := 5; i < len(long); i++ {
			long[i] = 'a'
		}
		_, _ = c.Write(long)
		time.Sleep(time.Second)
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := f.OnAccept(&c, &streaminfo.Conn{}); err != ErrRequestLineTooLong {
		t.Fatalf("OnAccept = %v, want ErrRequestLineTooLong", err)
	}
	if got := st.Scope("l.http_inspector").Counter("read_error").Value(); got != 1 {
		t.Errorf("read_error = %d, want 1", got)
	}
}

package tlsinspector

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/listenerfilter"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func selfSigned(t testing.TB) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, DNSNames: []string{"x"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// accept runs the filter on one accepted connection and hands the (replaying)
// connection to then.
func accept(t *testing.T, f listenerfilter.Filter, client func(net.Conn), then func(net.Conn, *streaminfo.Conn, error)) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		client(c)
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	info := &streaminfo.Conn{}
	err = f.OnAccept(&c, info)
	then(c, info, err)
	c.Close()
	<-done
}

func TestTLSClientsOnRealSockets(t *testing.T) {
	cert := selfSigned(t)
	tests := []struct {
		name     string
		sni      string
		alpn     []string
		wantSNI  string
		maxVer   uint16
		counters []string
	}{
		{"sni and alpn", "Foo.Example.com", []string{"h2", "http/1.1"}, "foo.example.com", 0, []string{"tls_found", "sni_found", "alpn_found"}},
		{"no sni", "", []string{"http/1.1"}, "", 0, []string{"tls_found", "sni_not_found", "alpn_found"}},
		{"tls 1.2 no alpn", "a.b", nil, "a.b", tls.VersionTLS12, []string{"tls_found", "sni_found", "alpn_not_found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := stats.NewStore()
			f, err := New(&tlsinspectorv3.TlsInspector{}, NewStats(store.Scope("listener.test.tls_inspector")))
			if err != nil {
				t.Fatal(err)
			}
			var clientErr error
			var got string
			accept(t, f, func(c net.Conn) {
				tc := tls.Client(c, &tls.Config{ServerName: tt.sni, NextProtos: tt.alpn, InsecureSkipVerify: true, MaxVersion: tt.maxVer})
				if clientErr = tc.Handshake(); clientErr == nil {
					b, _ := io.ReadAll(tc)
					got = string(b)
				}
			}, func(c net.Conn, info *streaminfo.Conn, err error) {
				if err != nil {
					t.Fatal(err)
				}
				if info.TransportProtocol != "tls" || info.RequestedServerName != tt.wantSNI || strings.Join(info.ALPN, ",") != strings.Join(tt.alpn, ",") {
					t.Errorf("info %+v", info)
				}
				// The replayed bytes let the real handshake complete.
				ts := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
				if err := ts.Handshake(); err != nil {
					t.Fatalf("server handshake after inspection: %v", err)
				}
				ts.Write([]byte("hello"))
				ts.Close()
			})
			if clientErr != nil || got != "hello" {
				t.Fatalf("client: %v, read %q", clientErr, got)
			}
			for _, name := range tt.counters {
				if v := store.Counter("listener.test.tls_inspector." + name).Value(); v != 1 {
					t.Errorf("%s = %d", name, v)
				}
			}
		})
	}
}

func TestPlaintextIsRawBuffer(t *testing.T) {
	store := stats.NewStore()
	f, _ := New(&tlsinspectorv3.TlsInspector{}, NewStats(store.Scope("l.tls_inspector")))
	req := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	accept(t, f, func(c net.Conn) {
		c.Write([]byte(req))
		io.ReadAll(c) // keep the connection open until the server closes
	}, func(c net.Conn, info *streaminfo.Conn, err error) {
		if err != nil {
			t.Fatal(err)
		}
		if info.TransportProtocol != "raw_buffer" || info.RequestedServerName != "" {
			t.Errorf("info %+v", info)
		}
		b := make([]byte, len(req))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != req {
			t.Errorf("replayed %q, %v", b, err)
		}
	})
	if store.Counter("l.tls_inspector.tls_not_found").Value() != 1 {
		t.Error("tls_not_found not counted")
	}
}

func TestCloseOnParseErrorAndTooLarge(t *testing.T) {
	f, _ := New(&tlsinspectorv3.TlsInspector{CloseConnectionOnClientHelloParsingErrors: true}, nil)
	accept(t, f, func(c net.Conn) { c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); io.ReadAll(c) },
		func(_ net.Conn, _ *streaminfo.Conn, err error) {
			if !errors.Is(err, ErrParse) {
				t.Errorf("err %v, want ErrParse", err)
			}
		})
	store := stats.NewStore()
	small, err := New(&tlsinspectorv3.TlsInspector{MaxClientHelloSize: wrapperspb.UInt32(256)}, NewStats(store.Scope("s")))
	if err != nil {
		t.Fatal(err)
	}
	accept(t, small, func(c net.Conn) {
		tls.Client(c, &tls.Config{ServerName: strings.Repeat("a", 200) + ".example", NextProtos: []string{strings.Repeat("p", 200)}}).Handshake()
	}, func(_ net.Conn, _ *streaminfo.Conn, err error) {
		if !errors.Is(err, ErrClientHelloTooLarge) {
			t.Errorf("err %v, want ErrClientHelloTooLarge", err)
		}
	})
	if store.Counter("s.client_hello_too_large").Value() != 1 {
		t.Error("client_hello_too_large not counted")
	}
}

func TestRegisteredFactory(t *testing.T) {
	fac, err := listenerfilter.Registry.Lookup(Name, "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := anypb.New(&tlsinspectorv3.TlsInspector{EnableJa3Fingerprinting: wrapperspb.Bool(true)})
	if _, err := fac(a, stats.NewStore().Scope("listener.test")); err == nil || !strings.Contains(err.Error(), "enable_ja3_fingerprinting") {
		t.Errorf("ja3 not refused: %v", err)
	}
	a, _ = anypb.New(&tlsinspectorv3.TlsInspector{InitialReadBufferSize: wrapperspb.UInt32(512)})
	if _, err := fac(a, stats.NewStore().Scope("listener.test")); err != nil {
		t.Error(err)
	}
}

// helloBytes captures a real ClientHello written by crypto/tls.
func helloBytes(t testing.TB, cfg *tls.Config) []byte {
	a, b := net.Pipe()
	go func() { tls.Client(a, cfg).Handshake(); a.Close() }()
	var buf bytes.Buffer
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	tmp := make([]byte, 4096)
	for {
		n, err := b.Read(tmp)
		buf.Write(tmp[:n])
		if _, st := ParseClientHello(buf.Bytes(), 0); st != NeedMore || err != nil {
			break
		}
	}
	b.Close()
	return buf.Bytes()
}

func TestParseSplitRecordsAndPrefixes(t *testing.T) {
	hello := helloBytes(t, &tls.Config{ServerName: "split.example", NextProtos: []string{"h2"}})
	// Every strict prefix needs more; the whole parses.
	for i := 0; i < len(hello); i++ {
		if _, st := ParseClientHello(hello[:i], 0); st != NeedMore {
			t.Fatalf("prefix %d: status %d", i, st)
		}
	}
	// Re-split the handshake message over records of 7 bytes.
	msg := hello[5:]
	var split []byte
	for len(msg) > 0 {
		n := min(7, len(msg))
		split = append(split, 22, 3, 1, 0, byte(n))
		split = append(split, msg[:n]...)
		msg = msg[n:]
	}
	ch, st := ParseClientHello(split, 0)
	if st != Found || ch.ServerName != "split.example" || len(ch.ALPN) != 1 || ch.ALPN[0] != "h2" {
		t.Fatalf("split: %d %+v", st, ch)
	}
	for _, bad := range [][]byte{{0x16, 0x02}, {0x17, 3, 1}, {0x16, 3, 1, 0, 0}, {0x16, 3, 1, 0, 4, 2, 0, 0, 0}} {
		if _, st := ParseClientHello(bad, 0); st != NotTLS {
			t.Errorf("%x: status %d, want NotTLS", bad, st)
		}
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(helloBytes(f, &tls.Config{ServerName: "fuzz.example", NextProtos: []string{"h2", "http/1.1"}}))
	f.Add(helloBytes(f, &tls.Config{MaxVersion: tls.VersionTLS12}))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, st := ParseClientHello(b, 1024)
		if st != Found && (ch.ServerName != "" || ch.ALPN != nil) {
			t.Fatalf("status %d with data %+v", st, ch)
		}
		if st == Found && ch.HasSNI && ch.ServerName == "" {
			t.Fatal("empty SNI reported")
		}
		// Appending bytes never turns a decided result into NeedMore.
		if st != NeedMore {
			if _, st2 := ParseClientHello(append(b[:len(b):len(b)], 0x16), 1024); st2 == NeedMore {
				t.Fatalf("status %d became NeedMore", st)
			}
		}
	})
}

package h2

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawUpstream is an h2c server that answers every stream, once its request
// ended, from pre-encoded frames (200 with a 2-byte body, or with grpc a
// gRPC unary answer: headers, one message, trailers), writing its answers
// in one batch whenever its read buffer runs dry and giving the request
// bodies' flow-control credit back at once. It allocates nothing per
// stream, so allocs/op is the client's. The first answer on a connection
// adds its fields to the HPACK table; the later ones index them.
func rawUpstream(tb testing.TB, grpc bool) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serveRaw(c, grpc)
			}()
		}
	}()
	return ln.Addr().String()
}

func serveRaw(c net.Conn, grpc bool) {
	var blk bytes.Buffer
	enc := hpack.NewEncoder(&blk)
	encode := func(kv ...string) []byte {
		blk.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return append([]byte(nil), blk.Bytes()...)
	}
	answer := func() []byte {
		var resp []byte
		if grpc {
			resp = appendFrame(resp, frameHeaders, flagEndHeaders, 0, encode(":status", "200", "content-type", "application/grpc"))
			resp = appendFrame(resp, frameData, 0, 0, []byte{0, 0, 0, 0, 2, 'o', 'k'})
			return appendFrame(resp, frameHeaders, flagEndHeaders|flagEndStream, 0, encode("grpc-status", "0"))
		}
		resp = appendFrame(resp, frameHeaders, flagEndHeaders, 0, encode(":status", "200", "content-length", "2"))
		return appendFrame(resp, frameData, flagEndStream, 0, []byte("ok"))
	}
	first, again := answer(), answer()
	pre := make([]byte, prefaceLen)
	if _, err := io.ReadFull(c, pre); err != nil {
		return
	}
	br := bufio.NewReaderSize(c, 64<<10)
	out := appendFrame(make([]byte, 0, 64<<10), frameSettings, 0, 0, nil)
	var hdr [frameHeaderLen]byte
	buf := make([]byte, 1<<20)
	credit, answered := 0, false
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		var f frame
		f.parseHeader(hdr[:])
		p := buf[:f.length]
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		if f.typ == frameData {
			credit += len(p)
		}
		switch {
		case f.typ == frameSettings && !f.has(flagAck):
			out = appendFrame(out, frameSettings, flagAck, 0, nil)
		case f.typ == framePing && !f.has(flagAck):
			out = appendFrame(out, framePing, flagAck, 0, p)
		case (f.typ == frameHeaders || f.typ == frameData) && f.has(flagEndStream):
			resp := again
			if !answered {
				resp, answered = first, true
			}
			out = appendWithID(out, resp, f.id)
		case f.typ == frameGoAway:
			return
		}
		if br.Buffered() == 0 {
			if credit > 0 {
				out = appendWindowUpdate(out, 0, uint32(credit))
				credit = 0
			}
			if len(out) > 0 {
				if _, err := c.Write(out); err != nil {
					return
				}
				out = out[:0]
			}
		}
	}
}

// appendWithID appends frames (stream id 0 in their headers) with their
// stream id set to id.
func appendWithID(dst, frames []byte, id uint32) []byte {
	for len(frames) >= frameHeaderLen {
		n := frameHeaderLen + (int(frames[0])<<16 | int(frames[1])<<8 | int(frames[2]))
		start := len(dst)
		dst = append(dst, frames[:n]...)
		binary.BigEndian.PutUint32(dst[start+5:start+9], id&0x7fffffff)
		frames = frames[n:]
	}
	return dst
}

var noDeadline time.Time

var benchMsg = []byte{0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}

// runStreams runs n streams on workers goroutines, each calling one until
// the count is used up.
func runStreams(b *testing.B, n, workers int, one func() error) {
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := one(); err != nil {
					e := new(error) // only on failure: &err would move err to the heap every call
					*e = err
					failed.CompareAndSwap(nil, e)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		b.Fatal(*e)
	}
}

// BenchmarkClient: streams over one connection from 32 goroutines to an
// upstream that allocates nothing; per stream. "get" is a body-less GET
// answered 200 with 2 bytes, "grpc" a unary call (a message each way,
// response trailers). "own" is this package's ClientConn, "xnet" x/net's
// http2.ClientConn (configured as upstream.H2Pool configures it).
func BenchmarkClient(b *testing.B) {
	const workers = 32
	for _, grpc := range []bool{false, true} {
		name := "get"
		if grpc {
			name = "grpc"
		}
		b.Run(name+"/own", func(b *testing.B) {
			cc := dialClient(b, rawUpstream(b, grpc), nil)
			one := func() func() error {
				var req = reqHeaders("GET", "/bench/path", "user-agent", "bench", "accept", "*/*")
				if grpc {
					req = reqHeaders("POST", "/pkg.Svc/Call", "content-type", "application/grpc", "te", "trailers")
				}
				return func() error {
					s, err := cc.NewStream(req, !grpc)
					if err != nil {
						return err
					}
					defer s.Release()
					if grpc {
						if err := s.WriteData(benchMsg, true); err != nil {
							return err
						}
					}
					if _, err := s.ReadHeaders(noDeadline); err != nil {
						return err
					}
					for range 100 {
						if _, err := s.ReadData(noDeadline); err != nil {
							if err == io.EOF {
								break
							}
							return err
						}
					}
					if grpc && s.Trailers().Len() == 0 {
						return io.ErrUnexpectedEOF
					}
					return nil
				}
			}
			runStreams(b, workers*20, workers, one()) // warm up
			b.ReportAllocs()
			b.ResetTimer()
			runStreams(b, b.N, workers, one())
		})
		b.Run(name+"/xnet", func(b *testing.B) {
			addr := rawUpstream(b, grpc)
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			tr := &http2.Transport{AllowHTTP: true, DisableCompression: true, MaxEncoderHeaderTableSize: 1}
			cc, err := tr.NewClientConn(nc)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cc.Close() })
			u, _ := url.Parse("http://" + addr + "/bench/path")
			one := func() func() error {
				return func() error {
					req := &http.Request{Method: "GET", URL: u, Host: "test", Header: http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}},
						Proto: "HTTP/2.0", ProtoMajor: 2}
					if grpc {
						req.Method = "POST"
						req.Header = http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}}
						req.Body = io.NopCloser(bytes.NewReader(benchMsg))
						req.ContentLength = int64(len(benchMsg))
					}
					resp, err := cc.RoundTrip(req)
					if err != nil {
						return err
					}
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if grpc && resp.Trailer.Get("Grpc-Status") != "0" {
						return io.ErrUnexpectedEOF
					}
					return err
				}
			}
			runStreams(b, workers*20, workers, one())
			b.ReportAllocs()
			b.ResetTimer()
			runStreams(b, b.N, workers, one())
		})
	}
}

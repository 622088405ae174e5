package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// The proxy-only HTTP/2 benchmark: a client and an upstream that speak raw
// HTTP/2 frames with pre-encoded HPACK blocks and allocate nothing per
// stream, so allocs/op is (almost) only the proxy's. x/net's Framer is not
// used to read: it allocates a HeadersFrame per HEADERS frame even with
// SetReuseFrames (only DATA frames are reused).

// h2ToH1Config is an HTTP/2 (prior knowledge) listener routing to an
// HTTP/1.1 cluster.
var h2ToH1Config = strings.Replace(h2Config, h2UpstreamOptions, "", 1)

// HTTP/2 frame types and flags used here (RFC 9113 section 6).
const (
	frData         = 0x0
	frHeaders      = 0x1
	frRSTStream    = 0x3
	frSettings     = 0x4
	frPing         = 0x6
	frGoAway       = 0x7
	frWindowUpdate = 0x8

	flEndStream  = 0x1
	flAck        = 0x1
	flEndHeaders = 0x4
	flPadded     = 0x8
	flPriority   = 0x20
)

// hpackBlock encodes fields as literals never indexed (or static-table
// indexes), so the block leaves the peer's dynamic table alone and can be
// sent again and again.
func hpackBlock(fields ...string) []byte {
	var buf, one bytes.Buffer
	for i := 0; i+1 < len(fields); i += 2 {
		f := hpack.HeaderField{Name: fields[i], Value: fields[i+1]}
		one.Reset()
		_ = hpack.NewEncoder(&one).WriteField(f)
		if one.Bytes()[0]&0x80 == 0 { // not an exact static-table match
			one.Reset()
			f.Sensitive = true
			_ = hpack.NewEncoder(&one).WriteField(f)
		}
		buf.Write(one.Bytes())
	}
	return buf.Bytes()
}

// appendFrame appends one frame to dst.
func appendFrame(dst []byte, typ, flags byte, id uint32, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, byte(n>>16), byte(n>>8), byte(n), typ, flags)
	dst = binary.BigEndian.AppendUint32(dst, id&0x7fffffff)
	return append(dst, payload...)
}

func appendWindowUpdate(dst []byte, id, incr uint32) []byte {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], incr)
	return appendFrame(dst, frWindowUpdate, 0, id, p[:])
}

// frameReader reads whole frames into one reused buffer.
type frameReader struct {
	br  *bufio.Reader
	hdr [9]byte
	buf []byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, 64<<10), buf: make([]byte, 1<<14)}
}

// next returns the next frame; payload is valid until the following call.
func (fr *frameReader) next() (typ, flags byte, id uint32, payload []byte, err error) {
	if _, err = io.ReadFull(fr.br, fr.hdr[:]); err != nil {
		return
	}
	n := int(fr.hdr[0])<<16 | int(fr.hdr[1])<<8 | int(fr.hdr[2])
	if n > len(fr.buf) {
		err = fmt.Errorf("frame of %d bytes", n)
		return
	}
	payload = fr.buf[:n]
	if _, err = io.ReadFull(fr.br, payload); err != nil {
		return
	}
	return fr.hdr[3], fr.hdr[4], binary.BigEndian.Uint32(fr.hdr[5:]) & 0x7fffffff, payload, nil
}

// headerBlock strips the padding, priority and leading table size updates
// of a HEADERS payload.
func headerBlock(flags byte, p []byte) []byte {
	if flags&flPadded != 0 && len(p) > 0 {
		pad := int(p[0])
		p = p[1:]
		if pad > len(p) {
			return nil
		}
		p = p[:len(p)-pad]
	}
	if flags&flPriority != 0 && len(p) >= 5 {
		p = p[5:]
	}
	// Dynamic table size updates (001xxxxx, with continuation bytes when
	// the 5-bit prefix is full) may start a block.
	for len(p) > 0 && p[0]&0xe0 == 0x20 {
		full := p[0]&0x1f == 0x1f
		p = p[1:]
		for full && len(p) > 0 {
			full = p[0]&0x80 != 0
			p = p[1:]
		}
	}
	return p
}

// rawH2Upstream is an h2c server answering every stream, once its request
// ended, with 200 and a 2-byte body, or with grpc a gRPC unary answer
// (headers, one message, trailers with grpc-status 0), from pre-encoded
// frames, writing its answers in one batch whenever its read buffer runs
// dry. It gives the request bodies' flow-control credit back at once.
func rawH2Upstream(b *testing.B, grpc bool) int {
	var resp []byte
	if grpc {
		resp = appendFrame(resp, frHeaders, flEndHeaders, 0, hpackBlock(":status", "200", "content-type", "application/grpc"))
		resp = appendFrame(resp, frData, 0, 0, grpcMsg)
		resp = appendFrame(resp, frHeaders, flEndHeaders|flEndStream, 0, hpackBlock("grpc-status", "0"))
	} else {
		resp = appendFrame(resp, frHeaders, flEndHeaders, 0, hpackBlock(":status", "200", "content-length", "2"))
		resp = appendFrame(resp, frData, flEndStream, 0, okBody)
	}
	return servertest.ServeTCP(b, func(c net.Conn) {
		preface := make([]byte, len(h2ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil || string(preface) != h2ClientPreface {
			return
		}
		out := appendFrame(make([]byte, 0, 64<<10), frSettings, 0, 0, nil)
		fr := newFrameReader(c)
		credit := 0
		for {
			typ, flags, id, p, err := fr.next()
			if err != nil {
				return
			}
			if typ == frData {
				credit += len(p)
			}
			switch {
			case typ == frSettings && flags&flAck == 0:
				out = appendFrame(out, frSettings, flAck, 0, nil)
			case typ == frPing && flags&flAck == 0:
				out = appendFrame(out, frPing, flAck, 0, p)
			case (typ == frHeaders || typ == frData) && flags&flEndStream != 0:
				out = appendWithStreamID(out, resp, id)
			case typ == frGoAway:
				return
			}
			if fr.br.Buffered() == 0 {
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
	})
}

// appendWithStreamID appends frames (stream id 0 in their headers) with
// their stream id set to id.
func appendWithStreamID(dst, frames []byte, id uint32) []byte {
	for len(frames) >= 9 {
		n := 9 + (int(frames[0])<<16 | int(frames[1])<<8 | int(frames[2]))
		start := len(dst)
		dst = append(dst, frames[:n]...)
		binary.BigEndian.PutUint32(dst[start+5:start+9], id&0x7fffffff)
		frames = frames[n:]
	}
	return dst
}

// grpcMsg is a length-prefixed gRPC message of 16 bytes.
var grpcMsg = append([]byte{0, 0, 0, 0, 16}, "0123456789abcdef"...)

const h2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var okBody = []byte("ok")

// rawH2Client is one client connection keeping up to depth streams in
// flight; it opens streams while left (shared by all connections) is
// positive.
type rawH2Client struct {
	c     net.Conn
	fr    *frameReader
	out   []byte
	req   []byte // the request's frames (stream id 0), sent with each stream's id
	id    uint32
	depth int
	ok200 int // responses that began with :status 200
	ended int // streams the proxy ended
}

func dialRawH2(addr string, depth int, req []byte) (*rawH2Client, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	cl := &rawH2Client{c: c, fr: newFrameReader(c), out: make([]byte, 0, 64<<10), id: 1, depth: depth, req: req}
	cl.out = append(cl.out, h2ClientPreface...)
	cl.out = appendFrame(cl.out, frSettings, 0, 0, nil)
	cl.out = appendWindowUpdate(cl.out, 0, 1<<30)
	return cl, nil
}

// run sends streams until left is used up and all its streams are answered.
func (cl *rawH2Client) run(left *atomic.Int64) error {
	inflight, consumed := 0, 0
	open := func() {
		if left.Add(-1) < 0 {
			return
		}
		cl.out = appendWithStreamID(cl.out, cl.req, cl.id)
		cl.id += 2
		inflight++
	}
	for inflight < cl.depth {
		n := inflight
		if open(); inflight == n {
			break
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	for inflight > 0 {
		if len(cl.out) > 0 && cl.fr.br.Buffered() == 0 {
			if _, err := cl.c.Write(cl.out); err != nil {
				return err
			}
			cl.out = cl.out[:0]
			if time.Now().After(deadline) {
				return errors.New("benchmark connection ran for 5 minutes")
			}
		}
		typ, flags, id, p, err := cl.fr.next()
		if err != nil {
			return err
		}
		switch typ {
		case frHeaders:
			// A response's first field: :status 200 from the static table;
			// else these are trailers, which end the stream.
			if blk := headerBlock(flags, p); len(blk) > 0 && blk[0] == 0x88 {
				cl.ok200++
			} else if flags&flEndStream == 0 {
				return fmt.Errorf("stream %d: response is not 200 (%x)", id, blk)
			}
		case frData:
			consumed += len(p)
			if consumed >= 1<<20 {
				cl.out = appendWindowUpdate(cl.out, 0, uint32(consumed))
				consumed = 0
			}
		case frSettings:
			if flags&flAck == 0 {
				cl.out = appendFrame(cl.out, frSettings, flAck, 0, nil)
			}
			continue
		case frPing:
			if flags&flAck == 0 {
				cl.out = appendFrame(cl.out, frPing, flAck, 0, p)
			}
			continue
		case frRSTStream:
			return fmt.Errorf("stream %d reset", id)
		case frGoAway:
			return errors.New("GOAWAY from the proxy")
		default:
			continue
		}
		if flags&flEndStream != 0 && id != 0 {
			inflight--
			cl.ended++
			open()
		}
	}
	if cl.ok200 != cl.ended {
		return fmt.Errorf("%d streams ended, %d of them with 200", cl.ended, cl.ok200)
	}
	if len(cl.out) > 0 {
		_, err := cl.c.Write(cl.out)
		cl.out = cl.out[:0]
		return err
	}
	return nil
}

// processCPU is the process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHTTP2ProxyOnly sends b.N GET streams over conns h2c connections
// with streams in flight on each through the proxy, to an HTTP/1.1 upstream
// (h2c-http1) or an h2c one (h2c-h2c), and gRPC unary calls (one 16-byte
// message each way, grpc-unary). Client and upstream allocate nothing
// per stream (direct, without the proxy, shows it): allocs/op and B/op are
// the proxy's cost per stream.
func BenchmarkHTTP2ProxyOnly(b *testing.B) {
	const conns, depth = 8, 16
	proxy := func(cfg string) func(b *testing.B) string {
		return func(b *testing.B) string { return servertest.Start(b, cfg).Addr("front") }
	}
	get := appendFrame(nil, frHeaders, flEndHeaders|flEndStream, 0, hpackBlock(":method", "GET", ":scheme", "http",
		":path", "/bench", ":authority", "bench", "user-agent", "bench", "accept", "*/*"))
	// A gRPC unary call: headers, one 16-byte message ending the request.
	unary := appendFrame(nil, frHeaders, flEndHeaders, 0, hpackBlock(":method", "POST", ":scheme", "http",
		":path", "/grpc.testing.BenchmarkService/UnaryCall", ":authority", "bench", "content-type", "application/grpc",
		"te", "trailers", "user-agent", "grpc-go/1.79.0"))
	unary = appendFrame(unary, frData, flEndStream, 0, grpcMsg)
	cases := []struct {
		name string
		addr func(b *testing.B) string
		req  []byte
	}{
		{"h2c-http1", func(b *testing.B) string { return proxy(fmt.Sprintf(h2ToH1Config, fixedUpstream(b)))(b) }, get},
		{"h2c-h2c", func(b *testing.B) string { return proxy(fmt.Sprintf(h2Config, rawH2Upstream(b, false)))(b) }, get},
		{"grpc-unary", func(b *testing.B) string { return proxy(fmt.Sprintf(h2Config, rawH2Upstream(b, true)))(b) }, unary},
		// The harness alone: the client straight to the upstream.
		{"direct", func(b *testing.B) string { return fmt.Sprintf("127.0.0.1:%d", rawH2Upstream(b, false)) }, get},
		{"direct-grpc", func(b *testing.B) string { return fmt.Sprintf("127.0.0.1:%d", rawH2Upstream(b, true)) }, unary},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			addr := tc.addr(b)
			clients := make([]*rawH2Client, conns)
			for i := range clients {
				cl, err := dialRawH2(addr, depth, tc.req)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { cl.c.Close() })
				clients[i] = cl
			}
			runAll := func(n int64) {
				var left atomic.Int64
				left.Store(n)
				var wg sync.WaitGroup
				errs := make([]error, len(clients))
				for i, cl := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[i] = cl.run(&left)
					}()
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					b.Fatal(err)
				}
			}
			runAll(conns * depth * 20) // warm the pools and the upstream connections
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			runAll(int64(b.N))
			b.StopTimer()
			// CPU time of the whole process (proxy, client, upstream) per
			// stream: steadier than ns/op when other jobs share the cores.
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

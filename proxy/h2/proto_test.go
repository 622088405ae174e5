package h2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// client is a raw HTTP/2 client for protocol tests.
type client struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	blk bytes.Buffer
}

func dialRaw(t *testing.T, addr string, settings ...http2.Setting) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	cl := &client{t: t, c: c, fr: http2.NewFramer(c, c)}
	cl.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cl.fr.MaxHeaderListSize = 1 << 20
	cl.enc = hpack.NewEncoder(&cl.blk)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := cl.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return cl
}

// block HPACK-encodes name/value pairs.
func (cl *client) block(kv ...string) []byte {
	cl.blk.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		_ = cl.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), cl.blk.Bytes()...)
}

func reqFields(path string, extra ...string) []string {
	return append([]string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "x"}, extra...)
}

func (cl *client) headers(id uint32, end bool, kv ...string) {
	cl.t.Helper()
	if err := cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: cl.block(kv...), EndStream: end, EndHeaders: true}); err != nil {
		cl.t.Fatal(err)
	}
}

func (cl *client) data(id uint32, end bool, p []byte) {
	cl.t.Helper()
	if err := cl.fr.WriteData(id, end, p); err != nil {
		cl.t.Fatal(err)
	}
}

// until reads frames (answering SETTINGS) until pick returns true for one,
// and returns it; a read error fails the test.
func (cl *client) until(what string, pick func(f http2.Frame) bool) http2.Frame {
	cl.t.Helper()
	for range 10000 {
		f, err := cl.fr.ReadFrame()
		if err != nil {
			cl.t.Fatalf("waiting for %s: %v", what, err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			_ = cl.fr.WriteSettingsAck()
		}
		if pick(f) {
			return f
		}
	}
	cl.t.Fatalf("no %s", what)
	return nil
}

func (cl *client) rst(id uint32) http2.ErrCode {
	cl.t.Helper()
	f := cl.until("RST_STREAM", func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id
	})
	return f.(*http2.RSTStreamFrame).ErrCode
}

func (cl *client) goAway() *http2.GoAwayFrame {
	cl.t.Helper()
	return cl.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
}

// response reads stream id's response: headers (the final ones), body.
func (cl *client) response(id uint32) (map[string]string, []byte) {
	cl.t.Helper()
	h := map[string]string{}
	var body []byte
	cl.until("response end", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				return false
			}
			for _, hf := range f.Fields {
				h[hf.Name] = hf.Value
			}
			return f.StreamEnded()
		case *http2.DataFrame:
			if f.StreamID != id {
				return false
			}
			body = append(body, f.Data()...)
			return f.StreamEnded()
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				cl.t.Fatalf("stream %d reset: %v", id, f.ErrCode)
			}
		case *http2.GoAwayFrame:
			cl.t.Fatalf("GOAWAY %v", f.ErrCode)
		}
		return false
	})
	return h, body
}

// protoHandler: "/body/N" answers N bytes; "/hold" waits for Done and
// reports the stream's error on held; anything else echoes.
func protoHandler(held chan<- error) Handler {
	return HandlerFunc(func(s *Stream) {
		path, _ := s.Request().Get(":path")
		switch p := string(path); {
		case strings.HasPrefix(p, "/body/"):
			n, _ := strconv.Atoi(p[len("/body/"):])
			var h headers.Map
			h.Set(":status", "200")
			if s.WriteHeaders(&h, false) == nil {
				s.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_ = s.WriteData(bytes.Repeat([]byte("b"), n), true)
			}
		case p == "/hold":
			select {
			case <-s.Done():
			case <-time.After(5 * time.Second):
			}
			_, err := s.ReadData(time.Now().Add(time.Second))
			held <- err
		default:
			echo(s)
		}
	})
}

func TestRequestErrors(t *testing.T) {
	addr := startServer(t, &ServerConfig{MaxHeaderListSize: 1000}, protoHandler(nil))
	for _, tc := range []struct {
		name string
		kv   []string
		want http2.ErrCode
	}{
		{"uppercase name", reqFields("/", "X-Up", "1"), http2.ErrCodeProtocol},
		{"connection header", reqFields("/", "connection", "close"), http2.ErrCodeProtocol},
		{"upgrade header", reqFields("/", "upgrade", "h2c"), http2.ErrCodeProtocol},
		{"te gzip", reqFields("/", "te", "gzip"), http2.ErrCodeProtocol},
		{"no path", []string{":method", "GET", ":scheme", "http", ":authority", "x"}, http2.ErrCodeProtocol},
		{"empty path", []string{":method", "GET", ":scheme", "http", ":path", "", ":authority", "x"}, http2.ErrCodeProtocol},
		{"unknown pseudo", reqFields("/", ":foo", "1"), http2.ErrCodeProtocol},
		{"response pseudo", reqFields("/", ":status", "200"), http2.ErrCodeProtocol},
		{"pseudo after regular", append([]string{"x-a", "1"}, reqFields("/")...), http2.ErrCodeProtocol},
		{"duplicate pseudo", append(reqFields("/"), ":path", "/2"), http2.ErrCodeProtocol},
		{"protocol not allowed", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/", ":authority", "x"}, http2.ErrCodeProtocol},
		{"connect with path", []string{":method", "CONNECT", ":path", "/", ":authority", "x"}, http2.ErrCodeProtocol},
		{"content-length with END_STREAM", reqFields("/", "content-length", "3"), http2.ErrCodeProtocol},
		{"bad content-length", reqFields("/", "content-length", "x"), http2.ErrCodeProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dialRaw(t, addr)
			cl.headers(1, true, tc.kv...)
			if got := cl.rst(1); got != tc.want {
				t.Fatalf("RST_STREAM %v, want %v", got, tc.want)
			}
			// The connection still serves.
			cl.headers(3, true, reqFields("/ok")...)
			if h, _ := cl.response(3); h[":status"] != "200" {
				t.Fatalf("after the reset: %v", h)
			}
		})
	}
	t.Run("header list too large", func(t *testing.T) {
		cl := dialRaw(t, addr)
		cl.headers(1, true, reqFields("/", "x-big", strings.Repeat("v", 2000))...)
		if h, _ := cl.response(1); h[":status"] != "431" {
			t.Fatalf("status %q, want 431", h[":status"])
		}
	})
}

func TestContentLengthMismatch(t *testing.T) {
	addr := startServer(t, nil, protoHandler(nil))
	for _, tc := range []struct {
		name  string
		cl    string
		parts []string
	}{
		{"more", "3", []string{"ab", "cd"}},
		{"less", "5", []string{"ab"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dialRaw(t, addr)
			cl.headers(1, false, reqFields("/", "content-length", tc.cl)...)
			for i, p := range tc.parts {
				cl.data(1, i == len(tc.parts)-1, []byte(p))
			}
			if got := cl.rst(1); got != http2.ErrCodeProtocol {
				t.Fatalf("RST_STREAM %v", got)
			}
		})
	}
}

func TestConnectionErrors(t *testing.T) {
	addr := startServer(t, nil, protoHandler(nil))
	for _, tc := range []struct {
		name string
		send func(cl *client)
		want http2.ErrCode
	}{
		{"DATA on stream 0", func(cl *client) { _, _ = cl.c.Write(appendFrame(nil, frameData, 0, 0, []byte("x"))) }, http2.ErrCodeProtocol},
		{"oversized frame", func(cl *client) { _, _ = cl.c.Write(appendFrame(nil, frameData, 0, 1, make([]byte, 16385))) }, http2.ErrCodeFrameSize},
		{"even stream id", func(cl *client) { cl.headers(2, true, reqFields("/")...) }, http2.ErrCodeProtocol},
		{"DATA on idle stream", func(cl *client) { cl.data(5, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"decreasing stream id", func(cl *client) {
			cl.headers(5, true, reqFields("/")...)
			cl.headers(3, true, reqFields("/")...)
		}, http2.ErrCodeProtocol},
		{"CONTINUATION without HEADERS", func(cl *client) { _ = cl.fr.WriteContinuation(1, true, cl.block(reqFields("/")...)) }, http2.ErrCodeProtocol},
		{"frame inside a header block", func(cl *client) {
			_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: cl.block(reqFields("/")...)})
			_ = cl.fr.WritePing(false, [8]byte{})
		}, http2.ErrCodeProtocol},
		{"connection window overflow", func(cl *client) { _ = cl.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl},
		{"bad HPACK", func(cl *client) {
			_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff}, EndHeaders: true, EndStream: true})
		}, http2.ErrCodeCompression},
		{"PUSH_PROMISE", func(cl *client) {
			_ = cl.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"bad SETTINGS_MAX_FRAME_SIZE", func(cl *client) { _ = cl.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 100}) }, http2.ErrCodeProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dialRaw(t, addr)
			tc.send(cl)
			if g := cl.goAway(); g.ErrCode != tc.want {
				t.Fatalf("GOAWAY %v, want %v", g.ErrCode, tc.want)
			}
		})
	}
}

// TestSendFlowControl: the response body waits for the client's windows,
// including an INITIAL_WINDOW_SIZE change applied to open streams.
func TestSendFlowControl(t *testing.T) {
	addr := startServer(t, nil, protoHandler(nil))
	cl := dialRaw(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	cl.headers(1, true, reqFields("/body/100")...)
	got := 0
	cl.until("10 bytes", func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got += len(d.Data())
		}
		return got >= 10
	})
	if got != 10 {
		t.Fatalf("%d bytes before any WINDOW_UPDATE, want 10", got)
	}
	// Nothing more comes until the window grows.
	_ = cl.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if f, err := cl.fr.ReadFrame(); err == nil {
		if d, ok := f.(*http2.DataFrame); ok && len(d.Data()) > 0 {
			t.Fatalf("DATA past the window: %v", f)
		}
	}
	_ = cl.c.SetDeadline(time.Now().Add(10 * time.Second))
	cl.fr = http2.NewFramer(cl.c, cl.c) // the timed-out read may have left the framer mid-frame
	_ = cl.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 50})
	_ = cl.fr.WriteWindowUpdate(1, 50)
	cl.until("the rest", func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got += len(d.Data())
			return d.StreamEnded()
		}
		return false
	})
	if got != 100 {
		t.Fatalf("%d bytes, want 100", got)
	}
}

// TestReceiveFlowControl: DATA past the stream window resets the stream;
// consumed bytes come back as WINDOW_UPDATE at half the window.
func TestReceiveFlowControl(t *testing.T) {
	held := make(chan error, 4)
	addr := startServer(t, &ServerConfig{InitialStreamWindowSize: 65535, InitialConnWindowSize: 1 << 20}, protoHandler(held))
	t.Run("overflow", func(t *testing.T) {
		cl := dialRaw(t, addr)
		cl.headers(1, false, reqFields("/hold")...)
		chunk := make([]byte, 16384)
		for range 4 {
			cl.data(1, false, chunk)
		}
		cl.data(1, false, chunk[:65535-4*16384+1])
		if got := cl.rst(1); got != http2.ErrCodeFlowControl {
			t.Fatalf("RST_STREAM %v", got)
		}
		var se *StreamError
		if err := <-held; !errors.As(err, &se) || se.Code != http2.ErrCodeFlowControl || se.Remote {
			t.Fatalf("handler saw %v", err)
		}
	})
	t.Run("window update", func(t *testing.T) {
		cl := dialRaw(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		_ = cl.fr.WriteWindowUpdate(0, 1<<20) // room for the 80000-byte answer
		cl.headers(1, false, reqFields("/echo")...)
		for range 4 {
			cl.data(1, false, make([]byte, 10000))
		}
		f := cl.until("stream WINDOW_UPDATE", func(f http2.Frame) bool {
			w, ok := f.(*http2.WindowUpdateFrame)
			return ok && w.StreamID == 1
		}).(*http2.WindowUpdateFrame)
		if f.Increment < 65535/2 {
			t.Fatalf("increment %d", f.Increment)
		}
		for i := range 4 {
			cl.data(1, i == 3, make([]byte, 10000))
		}
		if h, body := cl.response(1); h["x-body-len"] != "80000" || len(body) != 80000 {
			t.Fatalf("headers %v, %d bytes", h, len(body))
		}
	})
}

// TestClientReset: RST_STREAM from the client closes Done and fails reads.
func TestClientReset(t *testing.T) {
	held := make(chan error, 1)
	addr := startServer(t, nil, protoHandler(held))
	cl := dialRaw(t, addr)
	cl.headers(1, false, reqFields("/hold")...)
	_ = cl.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	var se *StreamError
	select {
	case err := <-held:
		if !errors.As(err, &se) || se.Code != http2.ErrCodeCancel || !se.Remote {
			t.Fatalf("handler saw %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler not told of the reset")
	}
}

func TestTrailersContinuationCookies(t *testing.T) {
	addr := startServer(t, nil, protoHandler(nil))
	cl := dialRaw(t, addr)
	blk := cl.block(reqFields("/echo", "cookie", "a=1", "x-pad", strings.Repeat("p", 100), "cookie", "b=2")...)
	_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:10]})
	_ = cl.fr.WriteContinuation(1, false, blk[10:20])
	_ = cl.fr.WriteContinuation(1, true, blk[20:])
	if err := cl.fr.WriteDataPadded(1, false, []byte("hello"), make([]byte, 7)); err != nil {
		t.Fatal(err)
	}
	cl.headers(1, true, "x-trailer", "t1")
	h, body := cl.response(1)
	if h["x-cookie"] != "a=1; b=2" || string(body) != "hello" || h["x-trailer"] != "t1" {
		t.Fatalf("headers %v body %q", h, body)
	}
}

func TestMaxConcurrentStreams(t *testing.T) {
	held := make(chan error, 4)
	addr := startServer(t, &ServerConfig{MaxConcurrentStreams: 2}, protoHandler(held))
	cl := dialRaw(t, addr)
	cl.headers(1, false, reqFields("/hold")...)
	cl.headers(3, false, reqFields("/hold")...)
	cl.headers(5, false, reqFields("/hold")...)
	if got := cl.rst(5); got != http2.ErrCodeRefusedStream {
		t.Fatalf("RST_STREAM %v, want REFUSED_STREAM", got)
	}
}

// TestGracefulGoAway: Envoy's two-step drain, then the connection closes
// once its last stream is done.
func TestGracefulGoAway(t *testing.T) {
	conns := make(chan *Conn, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		c := NewConn(nc, nil, protoHandler(nil))
		conns <- c
		served <- c.Serve()
	}()
	cl := dialRaw(t, ln.Addr().String())
	c := <-conns
	cl.headers(1, false, reqFields("/echo")...)
	cl.until("SETTINGS", func(f http2.Frame) bool { _, ok := f.(*http2.SettingsFrame); return ok })
	c.GoAway()
	if g := cl.goAway(); g.LastStreamID != 1<<31-1 || g.ErrCode != http2.ErrCodeNo {
		t.Fatalf("first GOAWAY %v %v", g.LastStreamID, g.ErrCode)
	}
	cl.headers(3, true, reqFields("/after-first")...) // still accepted
	if h, _ := cl.response(3); h[":status"] != "200" {
		t.Fatalf("stream 3: %v", h)
	}
	c.GoAwayFinal(http2.ErrCodeNo, nil)
	if g := cl.goAway(); g.LastStreamID != 3 {
		t.Fatalf("final GOAWAY last stream %d, want 3", g.LastStreamID)
	}
	cl.data(1, true, []byte("end"))
	if _, body := cl.response(1); string(body) != "end" {
		t.Fatalf("stream 1 body %q", body)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after its last stream")
	}
}

func TestExtendedConnect(t *testing.T) {
	addr := startServer(t, &ServerConfig{AllowExtendedConnect: true}, protoHandler(nil))
	cl := dialRaw(t, addr)
	f := cl.until("SETTINGS", func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && !s.IsAck() }).(*http2.SettingsFrame)
	if v, ok := f.Value(http2.SettingEnableConnectProtocol); !ok || v != 1 {
		t.Fatalf("SETTINGS_ENABLE_CONNECT_PROTOCOL %v %v", v, ok)
	}
	cl.headers(1, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/ws", ":authority", "x")
	cl.data(1, true, []byte("tunnel"))
	h, body := cl.response(1)
	if h["x-method"] != "CONNECT" || string(body) != "tunnel" {
		t.Fatalf("headers %v body %q", h, body)
	}
}

func TestPingAndSettingsAck(t *testing.T) {
	addr := startServer(t, nil, protoHandler(nil))
	cl := dialRaw(t, addr)
	_ = cl.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	var ping, ack bool
	cl.until("PING and SETTINGS acks", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.PingFrame:
			ping = f.IsAck() && f.Data == [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
		case *http2.SettingsFrame:
			ack = ack || f.IsAck()
		}
		return ping && ack
	})
}

// TestStreamContext: contexts derived from the stream's are canceled by a
// client reset; a stopped AfterFunc does not run.
func TestStreamContext(t *testing.T) {
	type result struct {
		childErr, parentErr error
		stopped, ran        bool
	}
	got := make(chan result, 1)
	ready := make(chan struct{}, 1)
	addr := startServer(t, nil, HandlerFunc(func(s *Stream) {
		ctx := s.Context()
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		ran := make(chan struct{}, 1)
		stop := context.AfterFunc(ctx, func() { ran <- struct{}{} })
		stopped := stop()
		ready <- struct{}{}
		var r result
		select {
		case <-child.Done():
			r.childErr = child.Err()
		case <-time.After(5 * time.Second):
		}
		r.parentErr, r.stopped = ctx.Err(), stopped
		select {
		case <-ran:
			r.ran = true
		case <-time.After(50 * time.Millisecond):
		}
		got <- r
	}))
	cl := dialRaw(t, addr)
	cl.headers(1, false, reqFields("/")...)
	<-ready
	_ = cl.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	r := <-got
	if r.childErr != context.Canceled || r.parentErr != context.Canceled || !r.stopped || r.ran {
		t.Fatalf("%+v", r)
	}
}

// TestIdleTimeout: a connection without streams for IdleTimeout gets
// GOAWAY(NO_ERROR) naming its last stream, then closes.
func TestIdleTimeout(t *testing.T) {
	addr := startServer(t, &ServerConfig{IdleTimeout: 100 * time.Millisecond}, protoHandler(nil))
	cl := dialRaw(t, addr)
	cl.headers(1, true, reqFields("/")...)
	if h, _ := cl.response(1); h[":status"] != "200" {
		t.Fatalf("response %v", h)
	}
	g := cl.goAway()
	if g.ErrCode != http2.ErrCodeNo || g.LastStreamID != 1 {
		t.Fatalf("GOAWAY %v last %d", g.ErrCode, g.LastStreamID)
	}
	if _, err := cl.fr.ReadFrame(); err == nil {
		t.Fatal("connection still open after the idle GOAWAY")
	}
}

// TestKeepalivePing: a quiet client gets a PING; one that answers nothing
// is closed after PingTimeout.
func TestKeepalivePing(t *testing.T) {
	addr := startServer(t, &ServerConfig{PingInterval: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond}, protoHandler(nil))
	cl := dialRaw(t, addr)
	cl.until("PING", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() })
	for range 200 {
		if _, err := cl.fr.ReadFrame(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection not closed: %v", err)
			}
			return // closed: the PING was never answered
		}
	}
	t.Fatal("connection not closed")
}

// TestFramesAfterReset: DATA the client had in flight when this side reset
// the stream is ignored; DATA after the client's own RST_STREAM is a
// stream error (STREAM_CLOSED).
func TestFramesAfterReset(t *testing.T) {
	addr := startServer(t, nil, HandlerFunc(func(s *Stream) {
		_ = s.WriteHeaders(okHeaders, false)
		_ = s.WriteData(okBody, true) // the request is still open: RST_STREAM(NO_ERROR) follows
	}))
	cl := dialRaw(t, addr)
	cl.headers(1, false, reqFields("/")...)
	if got := cl.rst(1); got != http2.ErrCodeNo {
		t.Fatalf("RST_STREAM %v, want NO_ERROR", got)
	}
	cl.data(1, false, []byte("in flight"))
	_ = cl.fr.WritePing(false, [8]byte{9})
	cl.until("PING ack", func(f http2.Frame) bool {
		if r, ok := f.(*http2.RSTStreamFrame); ok {
			t.Fatalf("in-flight DATA answered with RST_STREAM %v", r.ErrCode)
		}
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck()
	})
	_ = cl.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	cl.data(1, true, []byte("after RST_STREAM"))
	if got := cl.rst(1); got != http2.ErrCodeStreamClosed {
		t.Fatalf("RST_STREAM %v, want STREAM_CLOSED", got)
	}
}

// TestLateMalformedTrailers: trailers the client sent before it saw this
// side's RST_STREAM(NO_ERROR) are ignored, unless malformed.
func TestLateMalformedTrailers(t *testing.T) {
	addr := startServer(t, nil, HandlerFunc(func(s *Stream) {
		_ = s.WriteHeaders(okHeaders, false)
		_ = s.WriteData(okBody, true)
	}))
	cl := dialRaw(t, addr)
	cl.headers(1, false, reqFields("/")...)
	cl.headers(3, false, reqFields("/")...)
	// The two handlers run concurrently: their RST_STREAMs come in either order.
	got := map[uint32]http2.ErrCode{}
	cl.until("RST_STREAM on 1 and 3", func(f http2.Frame) bool {
		if r, ok := f.(*http2.RSTStreamFrame); ok {
			got[r.StreamID] = r.ErrCode
		}
		return len(got) == 2
	})
	for _, id := range []uint32{1, 3} {
		if c, ok := got[id]; !ok || c != http2.ErrCodeNo {
			t.Fatalf("stream %d: RST_STREAM %v (sent: %v), want NO_ERROR", id, c, ok)
		}
	}
	cl.headers(1, true, "x-trailer", "ok")
	cl.headers(3, true, ":path", "/trailer")
	f := cl.until("RST_STREAM", func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	if f.StreamID != 3 || f.ErrCode != http2.ErrCodeProtocol {
		t.Fatalf("RST_STREAM %v on stream %d, want PROTOCOL_ERROR on 3 only", f.ErrCode, f.StreamID)
	}
}

// TestLateDataPastContentLength: DATA in flight on a stream this side
// reset is still checked against the declared content-length.
func TestLateDataPastContentLength(t *testing.T) {
	addr := startServer(t, nil, HandlerFunc(func(s *Stream) {
		_ = s.WriteHeaders(okHeaders, false)
		_ = s.WriteData(okBody, true)
	}))
	cl := dialRaw(t, addr)
	cl.headers(1, false, reqFields("/", "content-length", "3")...)
	if got := cl.rst(1); got != http2.ErrCodeNo {
		t.Fatalf("RST_STREAM %v, want NO_ERROR", got)
	}
	cl.data(1, true, []byte("abcd"))
	if got := cl.rst(1); got != http2.ErrCodeProtocol {
		t.Fatalf("RST_STREAM %v, want PROTOCOL_ERROR", got)
	}
}

type countWatcher struct{ n chan string }

func (w *countWatcher) StreamCanceled() { w.n <- "ran" }

// TestStreamWatch: a Watcher still registered when the client resets the
// stream is told; an unwatched one is not, and its token is then spent.
func TestStreamWatch(t *testing.T) {
	type watchCtx interface {
		Watch(Watcher) uint64
		Unwatch(uint64) bool
	}
	got := make(chan string, 8)
	ready := make(chan struct{}, 1)
	addr := startServer(t, nil, HandlerFunc(func(s *Stream) {
		ctx := s.Context().(watchCtx)
		kept, dropped := &countWatcher{got}, &countWatcher{make(chan string, 1)}
		tk := ctx.Watch(kept)
		td := ctx.Watch(dropped)
		if !ctx.Unwatch(td) || ctx.Unwatch(td) {
			got <- "unwatch: want true then false"
		}
		ready <- struct{}{}
		select {
		case <-s.Context().Done():
		case <-time.After(5 * time.Second):
			got <- "not canceled"
		}
		select {
		case <-dropped.n:
			got <- "unwatched watcher ran"
		case <-time.After(50 * time.Millisecond):
		}
		if ctx.Unwatch(tk) {
			got <- "unwatch after the run: want false"
		}
		got <- "done"
	}))
	cl := dialRaw(t, addr)
	cl.headers(1, false, reqFields("/")...)
	<-ready
	_ = cl.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	var seen []string
	for len(seen) < 2 {
		select {
		case m := <-got:
			seen = append(seen, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out: %q", seen)
		}
	}
	if !(seen[0] == "ran" && seen[1] == "done") && !(seen[0] == "done" && seen[1] == "ran") {
		t.Fatalf("got %q, want ran and done", seen)
	}
}

// TestBodyBuffered: BodyBuffered is false until END_STREAM arrived, then
// reports the unread bytes, which ReadData returns without waiting.
func TestBodyBuffered(t *testing.T) {
	type result struct {
		before bool
		n      int
		body   string
		err    error
	}
	sent := make(chan struct{})
	got := make(chan result, 1)
	addr := startServer(t, nil, HandlerFunc(func(s *Stream) {
		var r result
		_, r.before = s.BodyBuffered()
		<-sent
		for range 500 {
			n, ok := s.BodyBuffered()
			if ok {
				r.n = n
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		p, err := s.ReadData(time.Now().Add(time.Second))
		r.body = string(p)
		if err == nil {
			_, err = s.ReadData(time.Now().Add(time.Second))
		}
		r.err = err
		got <- r
	}))
	cl := dialRaw(t, addr)
	cl.headers(1, false, reqFields("/")...)
	time.Sleep(20 * time.Millisecond) // the handler looks before the body
	cl.data(1, true, []byte("hello"))
	close(sent)
	r := <-got
	if r.before || r.n != 5 || r.body != "hello" || r.err != io.EOF {
		t.Fatalf("%+v", r)
	}
}

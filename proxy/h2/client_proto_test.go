package h2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fakeServer is the server end of a client connection, driven frame by
// frame with x/net's Framer.
type fakeServer struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	blk bytes.Buffer
}

// newFake connects a ClientConn to a fake server that sent SETTINGS with
// settings and read the client's preface and SETTINGS.
func newFake(t *testing.T, cfg *ClientConfig, settings ...http2.Setting) (*fakeServer, *ClientConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc := dialClient(t, ln.Addr().String(), cfg)
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	pre := make([]byte, prefaceLen)
	if _, err := io.ReadFull(c, pre); err != nil || string(pre) != http2.ClientPreface {
		t.Fatalf("preface %q %v", pre, err)
	}
	fs := &fakeServer{t: t, c: c, fr: http2.NewFramer(c, c)}
	fs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fs.fr.MaxHeaderListSize = 1 << 20
	fs.enc = hpack.NewEncoder(&fs.blk)
	if err := fs.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	sf := fs.until("client SETTINGS", func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && !s.IsAck() })
	if v, ok := sf.(*http2.SettingsFrame).Value(http2.SettingEnablePush); !ok || v != 0 {
		t.Fatalf("client SETTINGS without ENABLE_PUSH 0: %v", sf)
	}
	return fs, cc
}

// get opens stream 1 (GET /, ended), released when the test ends, and
// waits for its HEADERS at the fake server.
func (fs *fakeServer) get(cc *ClientConn) *ClientStream {
	fs.t.Helper()
	s, err := cc.NewStream(reqHeaders("GET", "/"), true)
	if err != nil {
		fs.t.Fatal(err)
	}
	fs.t.Cleanup(s.Release)
	fs.request(1)
	return s
}

// waitDone fails the test unless done closes within 5 seconds.
func waitDone(t *testing.T, done <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal(msg)
	}
}

func (fs *fakeServer) block(kv ...string) []byte {
	fs.blk.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		_ = fs.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), fs.blk.Bytes()...)
}

func (fs *fakeServer) headers(id uint32, end bool, kv ...string) {
	fs.t.Helper()
	if err := fs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: fs.block(kv...), EndStream: end, EndHeaders: true}); err != nil {
		fs.t.Fatal(err)
	}
}

func (fs *fakeServer) data(id uint32, end bool, p string) {
	fs.t.Helper()
	if err := fs.fr.WriteData(id, end, []byte(p)); err != nil {
		fs.t.Fatal(err)
	}
}

// until reads the client's frames (answering SETTINGS) until pick returns
// true for one, and returns it.
func (fs *fakeServer) until(what string, pick func(f http2.Frame) bool) http2.Frame {
	fs.t.Helper()
	for range 10000 {
		f, err := fs.fr.ReadFrame()
		if err != nil {
			fs.t.Fatalf("waiting for %s: %v", what, err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			_ = fs.fr.WriteSettingsAck()
		}
		if pick(f) {
			return f
		}
	}
	fs.t.Fatalf("no %s", what)
	return nil
}

func (fs *fakeServer) request(id uint32) *http2.MetaHeadersFrame {
	fs.t.Helper()
	return fs.until("request HEADERS", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == id
	}).(*http2.MetaHeadersFrame)
}

func (fs *fakeServer) rst(id uint32) http2.ErrCode {
	fs.t.Helper()
	return fs.until("RST_STREAM", func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id
	}).(*http2.RSTStreamFrame).ErrCode
}

func (fs *fakeServer) goAway() *http2.GoAwayFrame {
	fs.t.Helper()
	return fs.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
}

var soon = func() time.Time { return time.Now().Add(5 * time.Second) }

// TestClientMalformedResponse: a malformed response resets the stream with
// PROTOCOL_ERROR (RFC 9113 section 8.1.1), and the caller sees a local
// *StreamError.
func TestClientMalformedResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(fs *fakeServer, id uint32)
	}{
		{"bad status", func(fs *fakeServer, id uint32) { fs.headers(id, true, ":status", "2x0") }},
		{"no status", func(fs *fakeServer, id uint32) { fs.headers(id, true, "x", "y") }},
		{"pseudo after regular", func(fs *fakeServer, id uint32) { fs.headers(id, true, "x", "y", ":status", "200") }},
		{"request pseudo", func(fs *fakeServer, id uint32) { fs.headers(id, true, ":status", "200", ":path", "/") }},
		{"two statuses", func(fs *fakeServer, id uint32) { fs.headers(id, true, ":status", "200", ":status", "204") }},
		{"upper-case name", func(fs *fakeServer, id uint32) { fs.headers(id, true, ":status", "200", "X-Up", "1") }},
		{"connection header", func(fs *fakeServer, id uint32) { fs.headers(id, true, ":status", "200", "connection", "close") }},
		{"value with newline", func(fs *fakeServer, id uint32) { fs.headers(id, true, ":status", "200", "x", "a\nb") }},
		{"101", func(fs *fakeServer, id uint32) { fs.headers(id, true, ":status", "101") }},
		{"1xx ending the stream", func(fs *fakeServer, id uint32) { fs.headers(id, true, ":status", "103") }},
		{"content-length without body", func(fs *fakeServer, id uint32) { fs.headers(id, true, ":status", "200", "content-length", "3") }},
		{"two content-lengths", func(fs *fakeServer, id uint32) {
			fs.headers(id, true, ":status", "200", "content-length", "0", "content-length", "1")
		}},
		{"DATA before HEADERS", func(fs *fakeServer, id uint32) { fs.data(id, true, "x") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, cc := newFake(t, nil)
			s := fs.get(cc)
			tc.send(fs, 1)
			if code := fs.rst(1); code != http2.ErrCodeProtocol {
				t.Fatalf("RST_STREAM %v", code)
			}
			_, err := s.ReadHeaders(soon())
			var se *StreamError
			if !errors.As(err, &se) || se.Remote || se.Code != http2.ErrCodeProtocol {
				t.Fatalf("ReadHeaders: %v", err)
			}
		})
	}
}

// TestClientMalformedBody: body and trailer errors after good headers.
func TestClientMalformedBody(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(fs *fakeServer, id uint32)
		code http2.ErrCode
	}{
		{"content-length short", func(fs *fakeServer, id uint32) {
			fs.headers(id, false, ":status", "200", "content-length", "5")
			fs.data(id, true, "abc")
		}, http2.ErrCodeProtocol},
		{"content-length over", func(fs *fakeServer, id uint32) {
			fs.headers(id, false, ":status", "200", "content-length", "2")
			fs.data(id, false, "abc")
		}, http2.ErrCodeProtocol},
		{"trailers without END_STREAM", func(fs *fakeServer, id uint32) {
			fs.headers(id, false, ":status", "200")
			fs.headers(id, false, "grpc-status", "0")
		}, http2.ErrCodeProtocol},
		{"pseudo in trailers", func(fs *fakeServer, id uint32) {
			fs.headers(id, false, ":status", "200")
			fs.headers(id, true, ":status", "200")
		}, http2.ErrCodeProtocol},
		{"stream window exceeded", func(fs *fakeServer, id uint32) {
			fs.headers(id, false, ":status", "200")
			fs.data(id, false, string(make([]byte, 200)))
		}, http2.ErrCodeFlowControl},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, cc := newFake(t, &ClientConfig{InitialStreamWindowSize: 100})
			s := fs.get(cc)
			tc.send(fs, 1)
			if code := fs.rst(1); code != tc.code {
				t.Fatalf("RST_STREAM %v, want %v", code, tc.code)
			}
			if _, err := s.ReadHeaders(soon()); err != nil {
				t.Fatal(err)
			}
			var se *StreamError
			var err error
			for range 10 {
				if _, err = s.ReadData(soon()); err != nil {
					break
				}
			}
			if !errors.As(err, &se) || se.Remote || se.Code != tc.code {
				t.Fatalf("ReadData: %v", err)
			}
		})
	}
}

// TestClientConnErrors: frames that break the connection make the client
// send GOAWAY with the right code and fail its streams with a local
// *ClientConnError.
func TestClientConnErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(fs *fakeServer)
		code http2.ErrCode
	}{
		{"PUSH_PROMISE", func(fs *fakeServer) {
			_ = fs.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: fs.block(":method", "GET"), EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"DATA on an idle stream", func(fs *fakeServer) { fs.data(99, false, "x") }, http2.ErrCodeProtocol},
		{"HEADERS on an even stream", func(fs *fakeServer) { fs.headers(2, true, ":status", "200") }, http2.ErrCodeProtocol},
		{"HEADERS on an idle stream", func(fs *fakeServer) { fs.headers(5, true, ":status", "200") }, http2.ErrCodeProtocol},
		{"ENABLE_PUSH", func(fs *fakeServer) { _ = fs.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 1}) }, http2.ErrCodeProtocol},
		{"bad HPACK", func(fs *fakeServer) {
			_ = fs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
		}, http2.ErrCodeCompression},
		{"frame inside a header block", func(fs *fakeServer) {
			_ = fs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: fs.block(":status", "200")})
			fs.data(1, false, "x")
		}, http2.ErrCodeProtocol},
		{"CONTINUATION alone", func(fs *fakeServer) { _ = fs.fr.WriteContinuation(1, true, fs.block("x", "y")) }, http2.ErrCodeProtocol},
		{"WINDOW_UPDATE of 0", func(fs *fakeServer) { _ = fs.fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 0}) }, http2.ErrCodeProtocol},
		{"frame too large", func(fs *fakeServer) {
			_ = fs.fr.WriteRawFrame(http2.FrameData, 0, 1, make([]byte, minMaxFrame+1))
		}, http2.ErrCodeFrameSize},
		{"PING length", func(fs *fakeServer) { _ = fs.fr.WriteRawFrame(http2.FramePing, 0, 0, []byte{1, 2, 3}) }, http2.ErrCodeFrameSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, cc := newFake(t, nil)
			s := fs.get(cc)
			tc.send(fs)
			if ga := fs.goAway(); ga.ErrCode != tc.code {
				t.Fatalf("GOAWAY %v, want %v", ga.ErrCode, tc.code)
			}
			_, err := s.ReadHeaders(soon())
			var ce *ClientConnError
			if !errors.As(err, &ce) || ce.Remote || ce.Code != tc.code || !errors.Is(err, ErrConnClosed) {
				t.Fatalf("ReadHeaders: %v", err)
			}
			waitDone(t, cc.Done(), "connection not done")
			if cc.CanTakeNewStream() {
				t.Fatal("a closed connection takes streams")
			}
		})
	}
}

// TestClientFraming: padding, priority, CONTINUATION, 1xx and PING from
// the server.
func TestClientFraming(t *testing.T) {
	fs, cc := newFake(t, nil)
	s := fs.get(cc)
	_ = fs.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	fs.headers(1, false, ":status", "100")
	blk := fs.block(":status", "200", "x-a", "1", "x-b", "2")
	_ = fs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:3], PadLength: 7,
		Priority: http2.PriorityParam{StreamDep: 0, Weight: 10}})
	_ = fs.fr.WriteContinuation(1, false, blk[3:5])
	_ = fs.fr.WriteContinuation(1, true, blk[5:])
	_ = fs.fr.WriteDataPadded(1, false, []byte("hello "), make([]byte, 20))
	_ = fs.fr.WriteDataPadded(1, false, []byte("world"), nil)
	fs.headers(1, true, "x-tr", "t")
	ping := fs.until("PING ack", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() }).(*http2.PingFrame)
	if ping.Data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
		t.Fatalf("PING ack %v", ping.Data)
	}
	h, err := s.ReadHeaders(soon())
	if err != nil {
		t.Fatal(err)
	}
	if got := toMap(h); got[":status"] != "200" || got["x-a"] != "1" || got["x-b"] != "2" || !s.Continued() {
		t.Fatalf("headers %v continued %v", got, s.Continued())
	}
	var body []byte
	for range 10 {
		p, err := s.ReadData(soon())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body = append(body, p...)
	}
	if string(body) != "hello world" || s.Trailers().GetString("x-tr") != "t" {
		t.Fatalf("body %q trailers %v", body, toMap(s.Trailers()))
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("a complete stream is not done")
	}
}

// TestClientHeaderLimits: a response over MaxHeaderCount fields or
// MaxHeaderListSize bytes resets its stream with PROTOCOL_ERROR, and one at
// the limits is read.
func TestClientHeaderLimits(t *testing.T) {
	fields := func(n, valueLen int) []string {
		kv := []string{":status", "200"}
		for i := 1; i < n; i++ {
			kv = append(kv, fmt.Sprintf("x-h%d", i), strings.Repeat("v", valueLen))
		}
		return kv
	}
	for _, tc := range []struct {
		name  string
		cfg   ClientConfig
		kv    []string
		reset bool
	}{
		{"count at the limit", ClientConfig{MaxHeaderCount: 10}, fields(10, 1), false},
		{"count over the limit", ClientConfig{MaxHeaderCount: 10}, fields(11, 1), true},
		{"no count limit", ClientConfig{}, fields(300, 1), false},
		{"size over the limit", ClientConfig{MaxHeaderListSize: 4096}, fields(3, 2100), true},
		{"size under the limit", ClientConfig{MaxHeaderListSize: 4096}, fields(3, 1900), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, cc := newFake(t, &tc.cfg)
			s := fs.get(cc)
			fs.headers(1, true, tc.kv...)
			h, err := s.ReadHeaders(soon())
			if !tc.reset {
				if err != nil || h.Len() != len(tc.kv)/2 {
					t.Fatalf("ReadHeaders: %v, %d fields", err, h.Len())
				}
				return
			}
			if code := fs.rst(1); code != http2.ErrCodeProtocol {
				t.Fatalf("RST_STREAM %v", code)
			}
			var se *StreamError
			if !errors.As(err, &se) || se.Code != http2.ErrCodeProtocol {
				t.Fatalf("ReadHeaders: %v", err)
			}
		})
	}
}

// TestClientCanSend: CanSend follows the server's initial stream window.
func TestClientCanSend(t *testing.T) {
	fs, cc := newFake(t, nil, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	s, err := cc.NewStream(reqHeaders("POST", "/"), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Release)
	_ = s.Flush()
	fs.request(1)
	for i := 0; i < 500 && s.CanSend(11); i++ {
		time.Sleep(10 * time.Millisecond) // the client's read loop applies SETTINGS
	}
	if !s.CanSend(10) || s.CanSend(11) {
		t.Fatalf("CanSend(10) %v, CanSend(11) %v with a 10-byte window", s.CanSend(10), s.CanSend(11))
	}
}

// TestClientQueueData: queued DATA waits for the next write, then goes
// before it.
func TestClientQueueData(t *testing.T) {
	fs, cc := newFake(t, nil)
	s, err := cc.NewStream(reqHeaders("POST", "/"), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Release)
	if err := s.QueueData([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteData([]byte("de"), true); err != nil {
		t.Fatal(err)
	}
	fs.request(1)
	var body []byte
	f := fs.until("DATA with END_STREAM", func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		if ok {
			body = append(body, d.Data()...)
		}
		return ok && d.StreamEnded()
	})
	if string(body) != "abcde" || f.(*http2.DataFrame).StreamID != 1 {
		t.Fatalf("body %q", body)
	}
}

// TestClientReadable: Readable is false while the response body has not
// come, and true once a piece or the end is there.
func TestClientReadable(t *testing.T) {
	fs, cc := newFake(t, nil)
	s := fs.get(cc)
	fs.headers(1, false, ":status", "200")
	if _, err := s.ReadHeaders(soon()); err != nil {
		t.Fatal(err)
	}
	if s.Readable() {
		t.Fatal("Readable before any body")
	}
	fs.data(1, true, "x")
	for i := 0; i < 500 && !s.Readable(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if !s.Readable() {
		t.Fatal("not Readable with a piece and the end buffered")
	}
}

package h2

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestClientRefused: RST_STREAM(REFUSED_STREAM) is retriable, other codes
// are not; the connection takes new streams after either.
func TestClientRefused(t *testing.T) {
	fs, cc := newFake(t, nil)
	for i, code := range []http2.ErrCode{http2.ErrCodeRefusedStream, http2.ErrCodeInternal} {
		id := uint32(2*i + 1)
		s, err := cc.NewStream(reqHeaders("GET", "/"), true)
		if err != nil {
			t.Fatal(err)
		}
		fs.request(id)
		_ = fs.fr.WriteRSTStream(id, code)
		_, err = s.ReadHeaders(soon())
		var se *StreamError
		if !errors.As(err, &se) || !se.Remote || se.Code != code || IsRefused(err) != (code == http2.ErrCodeRefusedStream) {
			t.Fatalf("%v: %v (refused %v)", code, err, IsRefused(err))
		}
		s.Release()
	}
	if !cc.CanTakeNewStream() || cc.ActiveStreams() != 0 {
		t.Fatalf("can take %v, active %d", cc.CanTakeNewStream(), cc.ActiveStreams())
	}
}

// TestClientGoAway: streams above the GOAWAY's last stream id fail with
// ErrUnprocessed, the others finish, no new stream is taken, and the
// connection closes once the last stream is done.
func TestClientGoAway(t *testing.T) {
	fs, cc := newFake(t, nil)
	s1, err := cc.NewStream(reqHeaders("GET", "/1"), true)
	if err != nil {
		t.Fatal(err)
	}
	s3, err := cc.NewStream(reqHeaders("GET", "/3"), true)
	if err != nil {
		t.Fatal(err)
	}
	fs.request(3)
	_ = fs.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	if _, err := s3.ReadHeaders(soon()); !errors.Is(err, ErrUnprocessed) || !IsRefused(err) {
		t.Fatalf("stream 3: %v", err)
	}
	s3.Release()
	if cc.CanTakeNewStream() || !cc.GoAwayReceived() {
		t.Fatal("takes streams after GOAWAY")
	}
	if _, err := cc.NewStream(reqHeaders("GET", "/5"), true); !errors.Is(err, ErrCannotTakeStream) {
		t.Fatalf("NewStream after GOAWAY: %v", err)
	}
	fs.headers(1, false, ":status", "200")
	fs.data(1, true, "done")
	if _, err := s1.ReadHeaders(soon()); err != nil {
		t.Fatal(err)
	}
	if p, err := s1.ReadData(soon()); err != nil || string(p) != "done" {
		t.Fatalf("stream 1: %q %v", p, err)
	}
	s1.Release()
	waitDone(t, cc.Done(), "connection not closed after its last stream")
}

// TestClientGoAwayError: a GOAWAY with an error code, then the close: the
// streams it let finish fail with the server's code.
func TestClientGoAwayError(t *testing.T) {
	fs, cc := newFake(t, nil)
	s := fs.get(cc)
	_ = fs.fr.WriteGoAway(1, http2.ErrCodeEnhanceYourCalm, []byte("calm"))
	fs.c.Close()
	_, err := s.ReadHeaders(soon())
	var ce *ClientConnError
	if !errors.As(err, &ce) || !ce.Remote || ce.Code != http2.ErrCodeEnhanceYourCalm || IsRefused(err) {
		t.Fatalf("ReadHeaders: %v", err)
	}
}

// TestClientSendFlowControl: DATA waits for the stream window, which the
// server's SETTINGS (a delta on open streams) and WINDOW_UPDATE grow; a
// write deadline bounds the wait.
func TestClientSendFlowControl(t *testing.T) {
	fs, cc := newFake(t, nil, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	fs.until("SETTINGS ack", func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() })
	s, err := cc.NewStream(reqHeaders("POST", "/"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	s.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if err := s.WriteData([]byte("0123456789abc"), false); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WriteData past the window: %v", err)
	}
	s.SetWriteDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { done <- s.WriteData([]byte("abc0123456789"), true) }()
	var got []byte
	read := func(n int) {
		t.Helper()
		for len(got) < n {
			f := fs.until("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
			got = append(got, f.Data()...)
		}
		if len(got) != n {
			t.Fatalf("%d bytes sent, want %d", len(got), n)
		}
	}
	read(10)
	_ = fs.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 20})
	read(20)
	_ = fs.fr.WriteWindowUpdate(1, 3)
	read(23)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(got) != "0123456789abc0123456789" { // the first write's last 3 bytes were abandoned
		t.Fatalf("sent %q", got)
	}
}

// TestClientReceiveWindow: the bytes read go back to the server as
// WINDOW_UPDATE, on the stream and on the connection, once half a window
// was read.
func TestClientReceiveWindow(t *testing.T) {
	fs, cc := newFake(t, &ClientConfig{InitialStreamWindowSize: 1000, InitialConnWindowSize: 65535})
	s := fs.get(cc)
	fs.headers(1, false, ":status", "200")
	fs.data(1, false, string(make([]byte, 1000)))
	if _, err := s.ReadHeaders(soon()); err != nil {
		t.Fatal(err)
	}
	n := 0
	for n < 1000 {
		p, err := s.ReadData(soon())
		if err != nil {
			t.Fatal(err)
		}
		n += len(p)
	}
	wu := fs.until("WINDOW_UPDATE", func(f http2.Frame) bool {
		w, ok := f.(*http2.WindowUpdateFrame)
		return ok && w.StreamID == 1
	}).(*http2.WindowUpdateFrame)
	if wu.Increment != 1000 {
		t.Fatalf("stream WINDOW_UPDATE of %d", wu.Increment)
	}
	// Half the connection's window more: its update follows.
	for range 40 {
		fs.data(1, false, string(make([]byte, 1000)))
		for n = 0; n < 1000; {
			p, err := s.ReadData(soon())
			if err != nil {
				t.Fatal(err)
			}
			n += len(p)
		}
	}
	fs.until("connection WINDOW_UPDATE", func(f http2.Frame) bool {
		w, ok := f.(*http2.WindowUpdateFrame)
		return ok && w.StreamID == 0
	})
}

// TestClientEarlyResponse: a complete response followed by
// RST_STREAM(NO_ERROR) ends the request without losing the response.
func TestClientEarlyResponse(t *testing.T) {
	fs, cc := newFake(t, nil)
	s, err := cc.NewStream(reqHeaders("POST", "/"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if err := s.WriteData([]byte("part"), false); err != nil {
		t.Fatal(err)
	}
	fs.request(1)
	fs.headers(1, false, ":status", "413")
	fs.data(1, true, "too big")
	_ = fs.fr.WriteRSTStream(1, http2.ErrCodeNo)
	h, err := s.ReadHeaders(soon())
	if err != nil || h.StatusCode() != 413 {
		t.Fatalf("%v %v", h, err)
	}
	if p, err := s.ReadData(soon()); err != nil || string(p) != "too big" {
		t.Fatalf("%q %v", p, err)
	}
	if _, err := s.ReadData(soon()); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	for range 100 { // the RST_STREAM arrives after the data
		if s.WriteData([]byte("more"), false) != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.WriteData([]byte("more"), false); !errors.Is(err, errReqEnded) {
		t.Fatalf("write after the early response: %v", err)
	}
}

// TestClientHead: content-length on a HEAD response (or 204, 304) does
// not describe a body.
func TestClientHead(t *testing.T) {
	fs, cc := newFake(t, nil)
	s, err := cc.NewStream(reqHeaders("HEAD", "/"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	fs.request(1)
	fs.headers(1, true, ":status", "200", "content-length", "1234")
	h, err := s.ReadHeaders(soon())
	if err != nil || h.GetString("content-length") != "1234" {
		t.Fatalf("%v %v", h, err)
	}
	if _, err := s.ReadData(soon()); err != io.EOF {
		t.Fatalf("body: %v", err)
	}
}

// TestClientRequestEncoding: pseudo-headers first, connection-specific
// fields dropped, te only as trailers; Reset sends RST_STREAM; Shutdown
// sends GOAWAY.
func TestClientRequestEncoding(t *testing.T) {
	fs, cc := newFake(t, nil)
	req := reqHeaders("POST", "/x", "connection", "keep-alive", "x-a", "1", "te", "gzip", "transfer-encoding", "chunked", "host", "h")
	req.Add(":authority", "late") // a second one would be malformed; only checks order below
	req.Del(":authority")
	req.Add(":authority", "example.com")
	s, err := cc.NewStream(req, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	h := fs.request(1)
	var names []string
	for _, f := range h.Fields {
		names = append(names, f.Name+"="+f.Value)
	}
	want := []string{":method=POST", ":scheme=http", ":path=/x", ":authority=example.com", "x-a=1"}
	if len(names) != len(want) {
		t.Fatalf("fields %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("fields %v, want %v", names, want)
		}
	}
	if h.StreamEnded() {
		t.Fatal("END_STREAM on a request with a body to come")
	}
	s.Reset(http2.ErrCodeCancel)
	if code := fs.rst(1); code != http2.ErrCodeCancel {
		t.Fatalf("RST_STREAM %v", code)
	}
	var se *StreamError
	if err := s.WriteData([]byte("x"), true); !errors.As(err, &se) || se.Remote {
		t.Fatalf("write after Reset: %v", err)
	}
	cc.Shutdown()
	if ga := fs.goAway(); ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAY %v", ga.ErrCode)
	}
	waitDone(t, cc.Done(), "not closed after Shutdown without streams")
}

// TestClientKeepalive: after PingInterval without a frame the client sends
// a PING; an answer keeps the connection, silence closes it after
// PingTimeout.
func TestClientKeepalive(t *testing.T) {
	fs, cc := newFake(t, &ClientConfig{PingInterval: 30 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	ping := fs.until("PING", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() }).(*http2.PingFrame)
	_ = fs.fr.WritePing(true, ping.Data)
	fs.until("second PING", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() })
	waitDone(t, cc.Done(), "connection kept without PING answers")
	var ce *ClientConnError
	if err := cc.Err(); !errors.As(err, &ce) || ce.Remote || !strings.Contains(ce.Reason, "PING") {
		t.Fatalf("Err: %v", err)
	}
}

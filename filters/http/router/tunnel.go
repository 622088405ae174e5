package router

import (
	"io"
	"net"
	"time"

	"github.com/outrider-proxy/outrider/proxy/buffer"
	"github.com/outrider-proxy/outrider/proxy/netcopy"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// tunnel is the upstream side of a tunnel: an upgrade (101), a forwarded
// CONNECT's 2xx, or a terminated CONNECT. The zero value is no tunnel.
type tunnel struct {
	// up receives the client's bytes; nil means the pooled HTTP/1
	// connection (f.pc) does.
	up net.Conn
	// raw is the tunnel's own upstream connection, read raw and closed by
	// release: a terminated CONNECT's TCP connection, or an HTTP/2 stream
	// (h2TunnelUp). nil: the pooled HTTP/1 connection's decoder is read.
	raw io.Closer
	// connect marks a CONNECT request: its 2xx answer starts a tunnel.
	connect bool
}

// upConn is the connection the client's bytes go to.
func (f *filter) upConn() net.Conn {
	if f.tun.up != nil {
		return f.tun.up
	}
	return f.pc.Conn
}

// closeRaw closes the tunnel's own upstream connection, once.
func (f *filter) closeRaw() {
	if f.tun.raw != nil {
		_ = f.tun.raw.Close()
		f.tun.raw, f.tun.up = nil, nil
	}
}

// tunnelResponse reports whether a response of this status starts a
// tunnel: 101 to an upgrade, 2xx to a CONNECT.
func (f *filter) tunnelResponse(code int) bool {
	return (code == 101 && f.upgrade && !f.tun.connect) || (f.tun.connect && code >= 200 && code < 300)
}

// startTunnel runs an upgraded (101) exchange, or a CONNECT, as a byte
// tunnel: one goroutine copies the upstream's bytes to the client, while the
// client's bytes keep arriving through DecodeData (tunnelData) on the
// stream's goroutine. Either side's end is passed on as a half-close.
func (f *filter) startTunnel() {
	down, done := f.cb.Tunnel()
	if down == nil {
		f.release(false)
		f.cb.ResetStream(streaminfo.UpstreamProtocolError)
		return
	}
	up := f.upConn()
	_ = up.SetReadDeadline(time.Time{})
	var read func() ([]byte, error)
	free := func() {}
	if f.tun.raw != nil {
		read, free = rawReader(up)
	} else {
		read = f.codec.dec.ReadData // raw bytes after the 101 or 2xx, buffered ones first
	}
	copied := make(chan struct{}) // the goroutines keep their own: Reset clears f
	f.tunnelDone = copied
	idle := f.idle
	var maxTimer *time.Timer
	if !f.maxStream.IsZero() { // max_stream_duration ends the tunnel: its upstream side closes
		maxTimer = time.AfterFunc(time.Until(f.maxStream), func() { _ = up.Close() })
	}
	if d, ok := down.(interface{ Done() <-chan struct{} }); ok {
		// A stream that ends (a reset, say) stops the upstream copy.
		go func(ended <-chan struct{}) {
			select {
			case <-ended:
				_ = up.Close()
			case <-copied:
			}
		}(d.Done())
	}
	go func() {
		defer close(copied)
		defer done()
		defer free()
		if maxTimer != nil {
			defer maxTimer.Stop()
		}
		for {
			if idle > 0 { // the stream idle timeout bounds a silent tunnel
				_ = up.SetReadDeadline(time.Now().Add(idle))
			}
			p, err := read()
			if len(p) > 0 {
				if _, werr := down.Write(p); werr != nil {
					_ = up.Close() // the client is gone: end the upstream too
					return
				}
			}
			if err != nil {
				netcopy.CloseWrite(down)
				return
			}
		}
	}()
}

// rawReader reads the tunnel's own upstream connection (a terminated
// CONNECT's, an HTTP/2 stream) into a pooled buffer, valid until the next
// read; free gives it back.
func rawReader(up net.Conn) (read func() ([]byte, error), free func()) {
	b := buffer.Get(32 << 10)
	buf := b.Bytes()
	return func() ([]byte, error) {
		n, err := up.Read(buf)
		return buf[:n], err
	}, b.Release
}

// tunnelData sends the client's bytes upstream; at the client's end it
// half-closes the upstream and waits (bounded) for the other direction.
func (f *filter) tunnelData(p []byte, end bool) {
	up := f.upConn()
	if len(p) > 0 {
		if _, err := up.Write(p); err != nil {
			end = true
		}
	}
	if !end {
		return
	}
	netcopy.CloseWrite(up)
	select {
	case <-f.tunnelDone:
	case <-time.After(5 * time.Second):
		_ = up.Close() // the upstream did not finish: end the copy
		<-f.tunnelDone
	}
	f.release(false)
	f.cb.EncodeData(nil, true) // the exchange is over
	f.tunnelDone = nil
}

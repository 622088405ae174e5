package router

import (
	"time"

	"github.com/outrider-proxy/outrider/proxy/netcopy"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// startTunnel runs an upgraded (101) exchange as a byte tunnel: one
// goroutine copies the upstream's bytes to the client, while the client's
// bytes keep arriving through DecodeData (tunnelData) on the stream's
// goroutine. Either side's end is passed on as a half-close.
func (f *filter) startTunnel() {
	down, done := f.cb.Tunnel()
	if down == nil {
		f.release(false)
		f.cb.ResetStream(streaminfo.UpstreamProtocolError)
		return
	}
	_ = f.pc.Conn.SetReadDeadline(time.Time{})
	f.tunnelDone = make(chan struct{})
	dec, up, idle := f.codec.dec, f.pc.Conn, f.idle
	go func() {
		defer close(f.tunnelDone)
		defer done()
		for {
			if idle > 0 { // the stream idle timeout bounds a silent tunnel
				_ = up.SetReadDeadline(time.Now().Add(idle))
			}
			p, err := dec.ReadData() // raw bytes after the 101, buffered ones first
			if len(p) > 0 {
				if _, werr := down.Write(p); werr != nil {
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

// tunnelData sends the client's bytes upstream; at the client's end it
// half-closes the upstream and waits (bounded) for the other direction.
func (f *filter) tunnelData(p []byte, end bool) {
	up := f.pc.Conn
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

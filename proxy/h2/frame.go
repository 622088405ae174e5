package h2

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// Frame types and flags (RFC 9113 section 6).
const (
	frameData         = byte(http2.FrameData)
	frameHeaders      = byte(http2.FrameHeaders)
	framePriority     = byte(http2.FramePriority)
	frameRSTStream    = byte(http2.FrameRSTStream)
	frameSettings     = byte(http2.FrameSettings)
	framePushPromise  = byte(http2.FramePushPromise)
	framePing         = byte(http2.FramePing)
	frameGoAway       = byte(http2.FrameGoAway)
	frameWindowUpdate = byte(http2.FrameWindowUpdate)
	frameContinuation = byte(http2.FrameContinuation)

	flagEndStream  = byte(http2.FlagDataEndStream)
	flagAck        = byte(http2.FlagSettingsAck)
	flagEndHeaders = byte(http2.FlagHeadersEndHeaders)
	flagPadded     = byte(http2.FlagHeadersPadded)
	flagPriority   = byte(http2.FlagHeadersPriority)
)

const (
	frameHeaderLen = 9
	prefaceLen     = len(http2.ClientPreface)
	maxWindow      = 1<<31 - 1
	minMaxFrame    = 1 << 14
	maxMaxFrame    = 1<<24 - 1
	defaultWindow  = 65535
)

// frame is one frame read off the connection; payload points into the read
// buffer and is valid until the next frame is read.
type frame struct {
	length  uint32
	typ     byte
	flags   byte
	id      uint32
	payload []byte
}

func (f *frame) has(flag byte) bool { return f.flags&flag != 0 }

// parseHeader fills f's header fields from the 9 bytes of b.
func (f *frame) parseHeader(b []byte) {
	f.length = uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])
	f.typ, f.flags = b[3], b[4]
	f.id = binary.BigEndian.Uint32(b[5:]) & 0x7fffffff
}

// appendFrameHeader appends a frame header for a payload of n bytes.
func appendFrameHeader(dst []byte, n int, typ, flags byte, id uint32) []byte {
	dst = append(dst, byte(n>>16), byte(n>>8), byte(n), typ, flags)
	return binary.BigEndian.AppendUint32(dst, id&0x7fffffff)
}

func appendFrame(dst []byte, typ, flags byte, id uint32, payload []byte) []byte {
	return append(appendFrameHeader(dst, len(payload), typ, flags, id), payload...)
}

func appendU32Frame(dst []byte, typ byte, id, v uint32) []byte {
	dst = appendFrameHeader(dst, 4, typ, 0, id)
	return binary.BigEndian.AppendUint32(dst, v)
}

func appendRST(dst []byte, id uint32, code http2.ErrCode) []byte {
	return appendU32Frame(dst, frameRSTStream, id, uint32(code))
}

func appendWindowUpdate(dst []byte, id, incr uint32) []byte {
	return appendU32Frame(dst, frameWindowUpdate, id, incr)
}

func appendGoAway(dst []byte, last uint32, code http2.ErrCode, debug []byte) []byte {
	dst = appendFrameHeader(dst, 8+len(debug), frameGoAway, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, last&0x7fffffff)
	dst = binary.BigEndian.AppendUint32(dst, uint32(code))
	return append(dst, debug...)
}

func appendSetting(dst []byte, id http2.SettingID, v uint32) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(id))
	return binary.BigEndian.AppendUint32(dst, v)
}

// stripPadding removes the pad length byte and the padding of a PADDED
// frame's payload; ok is false when the padding is longer than the payload
// (a connection error, RFC 9113 section 6.1).
func stripPadding(f *frame) (p []byte, ok bool) {
	p = f.payload
	if !f.has(flagPadded) {
		return p, true
	}
	if len(p) < 1 {
		return nil, false
	}
	pad := int(p[0])
	p = p[1:]
	if pad > len(p) {
		return nil, false
	}
	return p[:len(p)-pad], true
}

// connError is a connection error (RFC 9113 section 5.4.1): GOAWAY with
// Code, then the connection closes.
type connError struct {
	Code   http2.ErrCode
	Reason string
}

func (e connError) Error() string { return "h2: connection error " + e.Code.String() + ": " + e.Reason }

// headersPayload checks a HEADERS frame from the peer (an odd stream id,
// padding and priority well formed; parity names the error otherwise) and
// returns its header block fragment; selfDep says the priority names the
// stream itself.
func headersPayload(f *frame, parity string) (p []byte, selfDep bool, err error) {
	id := f.id
	if id == 0 || id%2 == 0 {
		return nil, false, connError{http2.ErrCodeProtocol, parity}
	}
	p, ok := stripPadding(f)
	if !ok {
		return nil, false, connError{http2.ErrCodeProtocol, "HEADERS padding"}
	}
	if f.has(flagPriority) {
		if len(p) < 5 {
			return nil, false, connError{http2.ErrCodeFrameSize, "HEADERS priority"}
		}
		selfDep = binary.BigEndian.Uint32(p)&0x7fffffff == id
		p = p[5:]
	}
	return p, selfDep, nil
}

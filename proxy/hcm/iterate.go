package hcm

import (
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// side is the iteration state of one direction of a stream's filter chain.
// Positions count in iteration order: filter i when decoding, filter n-1-i
// when encoding.
type side struct {
	encode      bool
	holdAt      int  // position of the filter holding the stream, or -1
	heldHeaders bool // headers stopped at holdAt and not yet passed on
	headers     *headers.Map
	buf         []byte // data buffered by StopAndBuffer
	out         []byte // the last released buffer, passed on; swapped with buf
}

func (sd *side) reset(h *headers.Map) {
	sd.holdAt = -1
	sd.heldHeaders = false
	sd.headers = h
	sd.buf = sd.buf[:0]
	sd.out = sd.out[:0]
}

func (s *stream) filterAt(sd *side, k int) *activeFilter {
	if sd.encode {
		return &s.filters[len(s.filters)-1-k]
	}
	return &s.filters[k]
}

// iterHeaders passes headers from position start on. When every encoder
// continued, the codec writes them.
func (s *stream) iterHeaders(sd *side, start int, end bool) {
	for k := start; k < len(s.filters); k++ {
		f := s.filterAt(sd, k)
		st := httpfilter.Continue
		if sd.encode {
			if f.enc != nil {
				st = f.enc.EncodeHeaders(sd.headers, end)
			}
		} else if f.dec != nil {
			st = f.dec.DecodeHeaders(sd.headers, end)
		}
		if s.aborted(sd) {
			return
		}
		if st != httpfilter.Continue {
			if !s.terminal(sd, k) {
				sd.holdAt, sd.heldHeaders = k, true
			}
			return
		}
	}
	if sd.encode {
		s.writeHeaders(sd.headers, end)
	}
}

// iterData passes a body piece from position start on. A filter holding the
// stream (it stopped headers or buffered data) has each new piece added to
// the buffer before it is called, so it can read or rewrite the whole body
// through DecodingBuffer/EncodingBuffer; when it returns Continue, held
// headers and then the whole buffer go on to the next filter.
func (s *stream) iterData(sd *side, start int, p []byte, end bool) {
	for k := start; k < len(s.filters); k++ {
		f := s.filterAt(sd, k)
		holding := k == sd.holdAt
		if holding && len(p) > 0 {
			if len(sd.buf)+len(p) > s.bufferLimit() {
				s.bufferOverflow(sd)
				return
			}
			sd.buf = append(sd.buf, p...)
		}
		st := httpfilter.Continue
		if sd.encode {
			if f.enc != nil {
				st = f.enc.EncodeData(p, end)
			}
		} else if f.dec != nil {
			st = f.dec.DecodeData(p, end)
		}
		if s.aborted(sd) {
			return
		}
		switch {
		case st == httpfilter.Continue && holding:
			sd.holdAt = -1
			if sd.heldHeaders {
				sd.heldHeaders = false
				s.iterHeaders(sd, k+1, false)
				if s.aborted(sd) {
					return
				}
			}
			// Pass the whole buffer on; it moves to out so that a later
			// holder buffers into a different slice.
			p, sd.buf, sd.out = sd.buf, sd.out[:0], sd.buf
		case st == httpfilter.Continue:
			if f.rw != nil {
				if q, ok := f.rw.Rewritten(sd.encode); ok {
					p = q
				}
			}
		case holding:
			return // still holding; the piece is buffered
		case s.terminal(sd, k):
			return // the router took the data over
		case st == httpfilter.StopAndBuffer:
			if len(sd.buf)+len(p) > s.bufferLimit() {
				s.bufferOverflow(sd)
				return
			}
			sd.buf = append(sd.buf, p...)
			sd.holdAt = k
			return
		default:
			sd.holdAt = k
			return
		}
	}
	if sd.encode {
		s.writeData(p, end)
	}
}

// terminal reports whether position k is the terminal decoder (the router),
// which takes the request over rather than holding it.
func (s *stream) terminal(sd *side, k int) bool {
	return !sd.encode && k == len(s.filters)-1
}

// iterTrailers passes trailers on, first releasing what a continuing holder
// kept back.
func (s *stream) iterTrailers(sd *side, start int, t *headers.Map) {
	for k := start; k < len(s.filters); k++ {
		f := s.filterAt(sd, k)
		st := httpfilter.Continue
		if sd.encode {
			if f.enc != nil {
				st = f.enc.EncodeTrailers(t)
			}
		} else if f.dec != nil {
			st = f.dec.DecodeTrailers(t)
		}
		if s.aborted(sd) {
			return
		}
		if st != httpfilter.Continue {
			return
		}
		if k == sd.holdAt {
			sd.holdAt = -1
			if sd.heldHeaders {
				sd.heldHeaders = false
				s.iterHeaders(sd, k+1, false)
			}
			if len(sd.buf) > 0 && !s.aborted(sd) {
				var p []byte
				p, sd.buf, sd.out = sd.buf, sd.out[:0], sd.buf
				s.iterData(sd, k+1, p, false)
			}
			if s.aborted(sd) {
				return
			}
		}
		if f.rw != nil {
			if q, ok := f.rw.Rewritten(sd.encode); ok {
				s.iterData(sd, k+1, q, false)
				if s.aborted(sd) {
					return
				}
			}
		}
	}
	if sd.encode {
		s.writeTrailers(t)
	}
}

// aborted reports whether the direction must stop: a local reply replaced
// the response (decoding stops), or the stream was reset.
func (s *stream) aborted(sd *side) bool {
	if s.reset {
		return true
	}
	return !sd.encode && s.localReplied
}

func (s *stream) bufferOverflow(sd *side) {
	if sd.encode {
		s.cfg.stats.rsTooLarge.Inc()
		if s.responseStarted {
			s.resetStream(streaminfo.LocalReset)
			return
		}
		s.sendLocalReply(500, "Internal Server Error", "response_payload_too_large", 0)
		return
	}
	s.cfg.stats.rqTooLarge.Inc()
	s.sendLocalReply(413, "Payload Too Large", "request_payload_too_large", 0)
}

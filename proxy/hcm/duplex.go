package hcm

import (
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// Full-duplex streams. A stream's filters run on one goroutine. While a
// request body streams up, that goroutine normally blocks reading it; a
// terminal filter whose upstream answers before the request ended (gRPC
// bidirectional streaming) calls Duplex with a channel of events. The body is
// then read on a helper goroutine, one piece at a time (the next piece is
// read only once the filters took the previous one: backpressure), and the
// stream's goroutine runs whichever comes first, a body piece or an event.

// destroyer is a filter told when its stream is over, before the next one
// (Envoy's onDestroy): an upstream request still open is reset at once.
type destroyer interface{ OnDestroy() }

// Duplex makes the stream's goroutine run each function received on ch
// while the request body is read; the functions run one at a time on the
// stream's goroutine, so they may call every Callbacks method. nil stops it.
func (s *stream) Duplex(ch <-chan func()) { s.async = ch }

// RequestBodyBuffered reports that the whole request body has arrived at
// the downstream codec and how many bytes of it wait to be read: the body's
// pieces then come without waiting for the client (HTTP/2 only).
func (s *stream) RequestBodyBuffered() (n int, ok bool) { return s.ds.bodyBuffered() }

// DownstreamContext is done when the client reset the stream or went away
// (HTTP/2); nil when the downstream cannot tell (HTTP/1).
func (s *stream) DownstreamContext() context.Context { return s.ds.context() }

// Continue100 answers the client's Expect: 100-continue, once, when
// proxy_100_continue left it to the upstream: the router calls it when the
// upstream's 100 Continue arrives, or at once when the upstream cannot
// relay one (HTTP/2, whose client transport answers it itself). It reports
// whether the client was waiting for it; a write failure resets the stream.
func (s *stream) Continue100() bool {
	if !s.pending100 {
		return false
	}
	s.pending100 = false
	if err := s.ds.write100Continue(); err != nil || s.ds.flush() != nil {
		s.downstreamWriteFailed()
	}
	return true
}

// bodyPiece is one result of the downstream codec's readData.
type bodyPiece struct {
	p    []byte
	hard bool
	err  error
}

// duplexBody reads the rest of the request body on a helper goroutine while
// running the terminal filter's events, until the request or the response
// ends or the stream is reset. The helper is stopped and waited for before
// it returns, so the codec is the stream's again.
func (s *stream) duplexBody() {
	// The channels are the stream object's, kept across its streams: both
	// are empty whenever this returns (the helper took its last "more" or
	// sent its last piece).
	if s.dxPieces == nil {
		s.dxPieces, s.dxMore = make(chan bodyPiece), make(chan bool, 1)
	}
	pieces, more := s.dxPieces, s.dxMore
	ds, hard := s.ds, s.requestDeadline
	go func() {
		for {
			// No idle limit here: the stream is busy while its response
			// flows; the upstream side keeps the idle timer.
			p, hardFired, err := ds.readData(0, hard)
			pieces <- bodyPiece{p, hardFired, err}
			if err != nil || !<-more {
				return
			}
		}
	}()
	pending := true // the helper is reading and owes a piece
	for pending && !s.reqDone && !s.localReplied && !s.reset && !s.responseDone {
		var pc bodyPiece
		select {
		case pc = <-pieces: // a ready piece goes first: the request may be ending
		default:
			select {
			case fn := <-s.async:
				fn()
				continue
			case pc = <-pieces:
			}
		}
		pending = false
		if s.bodyPiece(pc.p, pc.hard, pc.err) && pc.err == nil {
			more <- true
			pending = true
		}
	}
	if !pending {
		return
	}
	// The stream is over before its request: stop the helper's read.
	for range 200 {
		ds.interrupt()
		select {
		case pc := <-pieces:
			if pc.err == nil {
				more <- false
			}
			return
		case <-time.After(25 * time.Millisecond):
		}
	}
	// The helper never answered: it keeps these channels, the next stream
	// gets new ones.
	s.dxPieces, s.dxMore = nil, nil
}

// bodyPiece passes one read result to the filters; false means stop reading
// the body (its end, or an error).
func (s *stream) bodyPiece(p []byte, requestTimerFirst bool, err error) bool {
	if err != nil && requestTimerFirst && errors.Is(err, os.ErrDeadlineExceeded) {
		s.cfg.stats.rqTimeout.Inc()
		if !s.responseStarted {
			s.sendLocalReply(408, "request timeout", "request_overall_timeout", 0)
		}
		s.reset, s.closeAfter = true, true
		return false
	}
	if err == io.EOF {
		s.reqDone = true
		s.info.LastDownstreamRxByte = s.info.Since(time.Now())
		s.ds.readTrailers(&s.reqTrl)
		if s.reqTrl.Len() > 0 {
			s.iterTrailers(&s.dec, 0, &s.reqTrl)
		} else {
			s.iterData(&s.dec, 0, nil, true)
		}
		return false
	}
	if err != nil {
		s.downstreamReadFailed(err)
		return false
	}
	s.info.BytesReceived += uint64(len(p))
	s.iterData(&s.dec, 0, p, false)
	return true
}

// destroy tells the filters that want it that the stream is over.
func (s *stream) destroy() {
	for i := range s.filters {
		if f := &s.filters[i]; f.destroy {
			f.inst.(destroyer).OnDestroy()
		}
	}
}

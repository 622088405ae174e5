package decompressor

import (
	"errors"
	"io"
)

// Decoder is a pull decoder (Go's gzip, brotli or zstd reader) that a Stream
// resets onto its own source for each body.
type Decoder interface {
	Reset(src io.Reader) error
	Read(p []byte) (int, error)
}

// StreamConfig is how a library drives its Decoder.
type StreamConfig struct {
	// Chunk is the size of each read from the decoder (the library's
	// chunk_size); 0 means 4096.
	Chunk int
	// MaxRatio bounds a piece's output to MaxRatio times its input plus
	// Slack, Envoy's defence against decompression bombs; 0 means no bound.
	// Slack is what the decoder may hold back from earlier pieces (Go's
	// inflater keeps up to its 32 KiB window until a block ends).
	MaxRatio uint64
	Slack    int
	// OnError counts a decoder error: corrupt input, or ErrAfterFailure for
	// each non-empty piece after a failure (zlib and brotli stay in their
	// error state and count again). OnOverflow counts a piece over the
	// ratio. Both are required.
	OnError    func(err error)
	OnOverflow func()
	// Ended, when set, reports errors that only say input followed the end
	// of the encoded stream (brotli's "excessive input", which the Go
	// decoder also reports for bytes it merely buffered); the stream ends
	// cleanly then. AfterEnd, when set, counts each non-empty piece that
	// arrives after the encoded stream ended; nil ignores them, as zlib.
	Ended    func(err error) bool
	AfterEnd func()
}

// ErrAfterFailure is what OnError gets for input that arrives after the
// stream failed.
var ErrAfterFailure = errors.New("decompressor: input after a failure")

// errAbort ends the decoder's goroutine when the stream is released early.
var errAbort = errors.New("decompressor: stream released")

// piece is one handoff to the decoder's goroutine.
type piece struct {
	p          []byte
	end, abort bool
}

// Stream runs a pull Decoder over a body that arrives piece by piece. Go's
// decoders read from an io.Reader and do not resume after it fails, so the
// decoder runs on its own goroutine, started at the first piece and ended
// with the body (or Release): each Decompress hands the piece over and waits
// until the decoder has read all of it and wants more, so the two goroutines
// never run at once and the piece is not copied. The zero Stream is not
// usable; see NewStream.
type Stream struct {
	cfg   StreamConfig
	d     Decoder
	chunk []byte

	toG chan piece
	toC chan struct{}

	// started: the goroutine runs or ran; finished: it returned (the body
	// ended, the decoder failed or the stream was released); failed: it
	// failed or overflowed, so later input counts as an error.
	started, finished, failed bool

	// Owned by the goroutine while the caller waits.
	cur   []byte // input the decoder has not read yet
	eof   bool   // the body is over: after cur, the decoder reads io.EOF
	owed  bool   // the caller waits for a signal on toC
	fed   int    // reads that gave the decoder bytes
	out   []byte
	limit int
}

// NewStream returns a Stream over d.
func NewStream(d Decoder, cfg StreamConfig) *Stream {
	if cfg.Chunk <= 0 {
		cfg.Chunk = 4096
	}
	return &Stream{cfg: cfg, d: d, chunk: make([]byte, cfg.Chunk),
		toG: make(chan piece), toC: make(chan struct{})}
}

// Decompress is Decompressor.Decompress.
func (s *Stream) Decompress(p []byte, end bool) []byte {
	s.out = s.out[:0]
	if s.finished {
		switch {
		case len(p) == 0:
		case s.failed:
			s.cfg.OnError(ErrAfterFailure)
		case s.cfg.AfterEnd != nil:
			s.cfg.AfterEnd()
		}
		return nil
	}
	s.limit = -1
	if s.cfg.MaxRatio > 0 {
		s.limit = int(s.cfg.MaxRatio)*len(p) + s.cfg.Slack
	}
	if !s.started {
		s.started = true
		go s.run()
	}
	s.toG <- piece{p: p, end: end}
	<-s.toC
	return s.out
}

// Reset makes the stream ready for a new body, ending the goroutine of the
// last one if it still waits for input.
func (s *Stream) Reset() {
	if s.started && !s.finished {
		s.toG <- piece{abort: true}
		<-s.toC
	}
	s.started, s.finished, s.failed = false, false, false
	s.cur, s.eof, s.owed, s.fed = nil, false, false, 0
	if cap(s.out) > 1<<20 {
		s.out = nil
	}
	s.out = s.out[:0]
}

// run is the decoder's goroutine: it reads the decoder until the body ends
// or fails, then signals the waiting caller a last time.
func (s *Stream) run() {
	err := s.d.Reset(feeder{s})
	var n, fed int
	for err == nil {
		fed = s.fed
		n, err = s.d.Read(s.chunk)
		s.out = append(s.out, s.chunk[:n]...)
		if s.limit >= 0 && len(s.out) > s.limit {
			s.failed = true
			s.cfg.OnOverflow()
			break
		}
	}
	switch {
	case err == nil, err == io.EOF, err == errAbort:
	case s.cfg.Ended != nil && s.cfg.Ended(err):
		// The decoder read a new piece after its stream ended and gave
		// nothing: that piece is redundant.
		if n == 0 && fed != s.fed && s.cfg.AfterEnd != nil {
			s.cfg.AfterEnd()
		}
	case errors.Is(err, io.ErrUnexpectedEOF) && s.eof && len(s.cur) == 0:
		// A truncated body is not an error: zlib and brotli simply wait for
		// input that never comes.
	default:
		s.failed = true
		s.cfg.OnError(err)
	}
	s.cur = nil
	s.finished = true
	if s.owed {
		s.toC <- struct{}{}
	}
}

// feeder is the decoder's source: the pieces handed over, one at a time.
type feeder struct{ s *Stream }

func (f feeder) Read(p []byte) (int, error) {
	s := f.s
	for len(s.cur) == 0 {
		if s.eof {
			return 0, io.EOF
		}
		if s.owed {
			s.toC <- struct{}{} // the piece is used up: the caller goes on
		}
		in := <-s.toG
		if in.abort {
			return 0, errAbort
		}
		s.cur, s.eof, s.owed = in.p, in.end, true
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	s.fed++
	return n, nil
}

package h2

import (
	"context"
	"time"
)

// Context is the stream's context: done, with context.Canceled, when the
// stream is reset (by either side) or its connection ends; a stream that
// ends normally leaves it open. It implements AfterFunc, so contexts
// derived from it (context.WithCancel, context.AfterFunc) register with the
// stream instead of starting a goroutine each. Like the stream, it is
// valid only until ServeStream returns.
func (s *Stream) Context() context.Context { return streamCtx{s} }

type streamCtx struct{ s *Stream }

func (streamCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (streamCtx) Value(any) any               { return nil }
func (c streamCtx) Done() <-chan struct{}     { return c.s.Done() }

func (c streamCtx) Err() error {
	s := c.s
	s.ctxMu.Lock()
	defer s.ctxMu.Unlock()
	if s.ctxCanceled {
		return context.Canceled
	}
	return nil
}

// AfterFunc runs f on its own goroutine once the context is done (at once
// when it is); stop unregisters f, reporting whether that stopped it.
func (c streamCtx) AfterFunc(f func()) (stop func() bool) {
	s := c.s
	s.ctxMu.Lock()
	defer s.ctxMu.Unlock()
	if s.ctxCanceled {
		s.ctxWG.Add(1)
		go s.runAfter(f)
		return func() bool { return false }
	}
	gen, i := s.ctxGen, len(s.afterFuncs)
	s.afterFuncs = append(s.afterFuncs, f)
	return func() bool {
		s.ctxMu.Lock()
		defer s.ctxMu.Unlock()
		if s.ctxGen != gen || s.afterFuncs[i] == nil {
			return false
		}
		s.afterFuncs[i] = nil
		return true
	}
}

// cancelContext marks the context done and runs its AfterFunc functions,
// each on its own goroutine (c.mu is held, and they may call Err); the
// stream goes back to the pool only once they returned (finish), so their
// Err still sees this stream's state.
func (s *Stream) cancelContext() {
	s.ctxMu.Lock()
	defer s.ctxMu.Unlock()
	if s.ctxCanceled {
		return
	}
	s.ctxCanceled = true
	for i, f := range s.afterFuncs {
		if f != nil {
			s.afterFuncs[i] = nil
			s.ctxWG.Add(1)
			go s.runAfter(f)
		}
	}
}

func (s *Stream) runAfter(f func()) {
	defer s.ctxWG.Done()
	f()
}

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

// A Watcher is told, on a goroutine of its own, that a stream's context
// is done. A pointer type registers without allocating.
type Watcher interface{ StreamCanceled() }

// funcWatcher adapts AfterFunc's function.
type funcWatcher func()

func (f funcWatcher) StreamCanceled() { f() }

// Watch registers w to be told once the context is done (at once when it
// is), without allocating once the stream's registry has grown; the token
// unregisters it (Unwatch). It is AfterFunc without closures.
func (c streamCtx) Watch(w Watcher) (token uint64) {
	s := c.s
	s.ctxMu.Lock()
	defer s.ctxMu.Unlock()
	if s.ctxCanceled {
		s.ctxWG.Add(1)
		go s.runAfter(w)
		return 0
	}
	s.afterFuncs = append(s.afterFuncs, w)
	return uint64(uint32(s.ctxGen))<<32 | uint64(len(s.afterFuncs))
}

// Unwatch unregisters the Watcher of token, reporting whether that stopped
// it: false when it already ran or runs, or the stream was reused since.
func (c streamCtx) Unwatch(token uint64) bool {
	s := c.s
	i := int(token&(1<<32-1)) - 1
	s.ctxMu.Lock()
	defer s.ctxMu.Unlock()
	if token == 0 || uint32(s.ctxGen) != uint32(token>>32) || i >= len(s.afterFuncs) || s.afterFuncs[i] == nil {
		return false
	}
	s.afterFuncs[i] = nil
	return true
}

// AfterFunc runs f on its own goroutine once the context is done (at once
// when it is); stop unregisters f, reporting whether that stopped it.
func (c streamCtx) AfterFunc(f func()) (stop func() bool) {
	token := c.Watch(funcWatcher(f))
	return func() bool { return c.Unwatch(token) }
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

func (s *Stream) runAfter(w Watcher) {
	defer s.ctxWG.Done()
	w.StreamCanceled()
}

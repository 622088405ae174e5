package client

import (
	"context"
	"sync"
)

// serial runs functions one at a time, in the order they were queued, on
// the goroutine that calls runQueue: the single owner of a client's state.
// Queuing never blocks; after close it drops what it is given.
type serial struct {
	mu     sync.Mutex
	queue  []func()
	wake   chan struct{} // capacity 1: "the queue is not empty"
	closed bool
}

func newSerial() serial { return serial{wake: make(chan struct{}, 1)} }

// enqueue queues f for runQueue; it never blocks.
func (s *serial) enqueue(f func()) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, f)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close drops the queue and refuses later functions; false when it was
// closed already.
func (s *serial) close() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed, s.queue = true, nil
	return true
}

// runQueue calls the queued functions until ctx ends.
func (s *serial) runQueue(ctx context.Context) {
	var batch []func()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		batch, s.queue = s.queue, batch[:0]
		s.mu.Unlock()
		for i, f := range batch {
			if ctx.Err() != nil {
				return
			}
			f()
			batch[i] = nil
		}
	}
}

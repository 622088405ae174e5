// Package buffer is the proxy's one pool of byte slices: size-classed,
// reference-counted, shared by every codec and filter. A Slice goes back to the
// pool when its last reference is released; bytes are never copied to share them.
package buffer

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Size classes, smallest first. A request for more than the largest class gets
// a plain allocation that is never pooled.
var classes = [...]int{512, 4 << 10, 16 << 10, 64 << 10}

// Largest is the biggest pooled size.
const Largest = 64 << 10

var pools [len(classes)]sync.Pool

func init() {
	for i := range classes {
		size := classes[i]
		pools[i].New = func() any { return &Slice{buf: make([]byte, size), class: int8(i)} }
	}
}

// Slice is a pooled byte slice with a reference count. The zero Slice is not
// usable; get one with Get.
type Slice struct {
	buf   []byte
	refs  atomic.Int32
	class int8 // index in classes, or -1 when not pooled
}

// Get returns a slice of at least n bytes with one reference, taken by the
// caller. Its contents are undefined.
func Get(n int) *Slice {
	for i, c := range classes {
		if n <= c {
			s := pools[i].Get().(*Slice)
			s.refs.Store(1)
			return s
		}
	}
	s := &Slice{buf: make([]byte, n), class: -1}
	s.refs.Store(1)
	return s
}

// Bytes is the whole backing array, of the class's size (at least what Get was asked for).
func (s *Slice) Bytes() []byte { return s.buf }

// Cap is len(Bytes()).
func (s *Slice) Cap() int { return len(s.buf) }

// Ref adds a reference: whoever calls it must call Release once as well.
func (s *Slice) Ref() { s.refs.Add(1) }

// Release drops a reference; the last one returns the slice to its pool.
// Releasing more than was referenced panics: it is a use-after-free.
func (s *Slice) Release() {
	switch n := s.refs.Add(-1); {
	case n > 0:
		return
	case n < 0:
		panic(fmt.Sprintf("buffer: Slice released %d times too many", -n))
	}
	if s.class >= 0 {
		pools[s.class].Put(s)
	}
}

// Refs is the current reference count, for tests.
func (s *Slice) Refs() int32 { return s.refs.Load() }

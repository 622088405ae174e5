package httpfilter

import (
	"sync"
	"sync/atomic"
)

// MaxPerRoute bounds a PerRoute cache: RDS updates bring new route
// messages, and the cache starts over when it holds this many.
const MaxPerRoute = 4096

// PerRoute caches what a filter compiles from route-level config, by the
// config's message (the route's typed_per_filter_config *anypb.Any, or
// another message that lives as long as its route table), so each is
// compiled once per route table rather than per request. The zero value is
// empty and ready; it is safe for concurrent use and reads take no lock.
type PerRoute[K comparable, T any] struct {
	m sync.Map // K -> T
	n atomic.Int32
}

// Get is the value cached for key, or compile(key) cached for key; when
// compile fails, broken is cached and returned instead (the route table was
// accepted without knowing the filter, and each filter says what a broken
// config means). Concurrent first calls for one key may each compile, but
// all of them return the one value that was cached.
func (p *PerRoute[K, T]) Get(key K, compile func(K) (T, error), broken T) T {
	if v, ok := p.m.Load(key); ok {
		return v.(T)
	}
	v, err := compile(key)
	if err != nil {
		v = broken
	}
	if p.n.Add(1) > MaxPerRoute {
		p.m.Clear()
		p.n.Store(1)
	}
	if old, loaded := p.m.LoadOrStore(key, v); loaded {
		return old.(T)
	}
	return v
}

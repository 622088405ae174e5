// Package drain tells long-lived connections that the proxy is draining, as
// Envoy's drain manager does. One Manager per server: Start flips it once;
// connections ask ShouldClose on each response and while idle.
package drain

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Manager signals a drain. The zero Manager drains immediately when started.
type Manager struct {
	// Gradual spreads closes over Time, as Envoy's --drain-strategy gradual:
	// the chance that ShouldClose says yes grows linearly from 0 at Start to 1
	// after Time. Otherwise (immediate) it says yes from Start on.
	Gradual bool
	Time    time.Duration

	started   atomic.Int64 // unix nanoseconds of Start; 0 before
	immediate atomic.Bool  // StartImmediate was called
	once      sync.Once
	mu        sync.Mutex
	ch        chan struct{}
	hooks     []func()
}

func (m *Manager) done() chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ch == nil {
		m.ch = make(chan struct{})
	}
	return m.ch
}

// Start begins draining and runs the OnStart hooks, in order, on the
// caller's goroutine; later calls do nothing.
func (m *Manager) Start() {
	ch := m.done()
	m.once.Do(func() {
		m.started.Store(time.Now().UnixNano())
		close(ch)
		m.mu.Lock()
		hooks := m.hooks
		m.hooks = nil
		m.mu.Unlock()
		for _, fn := range hooks {
			fn()
		}
	})
}

// StartImmediate begins draining as Start does, and from now on
// ShouldClose says yes whatever the strategy, even when a gradual drain had
// started already: Envoy's drain of a filter chain that an in-place listener
// update removed, whose connections close on their next response.
func (m *Manager) StartImmediate() {
	m.immediate.Store(true)
	m.Start()
}

// OnStart registers fn to run once when draining starts, so connections
// need not poll. fn must not block. When the drain has already started, fn
// runs at once on the caller's goroutine.
func (m *Manager) OnStart(fn func()) {
	m.mu.Lock()
	if m.started.Load() == 0 {
		m.hooks = append(m.hooks, fn)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	fn()
}

// Draining reports whether Start was called. It is one atomic load.
func (m *Manager) Draining() bool { return m.started.Load() != 0 }

// ShouldClose reports whether a connection should be closed now: never
// before Start, always when immediate, and with a probability that grows
// over the drain time when gradual.
func (m *Manager) ShouldClose() bool {
	start := m.started.Load()
	if start == 0 {
		return false
	}
	if !m.Gradual || m.Time <= 0 || m.immediate.Load() {
		return true
	}
	elapsed := time.Duration(time.Now().UnixNano() - start)
	return elapsed >= m.Time || rand.Int64N(int64(m.Time)) < int64(elapsed)
}

// Done is closed when draining starts.
func (m *Manager) Done() <-chan struct{} { return m.done() }

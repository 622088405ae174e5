// Package drain tells long-lived connections that the proxy is draining. One
// Manager per server: Start flips it once; connections poll Draining on each
// response and wait on Done while idle.
package drain

import (
	"sync"
	"sync/atomic"
)

// Manager signals the start of a drain. The zero Manager is ready to use.
type Manager struct {
	draining atomic.Bool
	once     sync.Once
	mu       sync.Mutex
	ch       chan struct{}
}

func (m *Manager) done() chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ch == nil {
		m.ch = make(chan struct{})
	}
	return m.ch
}

// Start begins draining; later calls do nothing.
func (m *Manager) Start() {
	ch := m.done()
	m.once.Do(func() {
		m.draining.Store(true)
		close(ch)
	})
}

// Draining reports whether Start was called. It is one atomic load.
func (m *Manager) Draining() bool { return m.draining.Load() }

// Done is closed when draining starts.
func (m *Manager) Done() <-chan struct{} { return m.done() }

package upstream

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// endpointsFunc is an EndpointSource that records the update function.
type endpointsFunc struct {
	mu     sync.Mutex
	update func(*endpointv3.ClusterLoadAssignment) error
}

func (e *endpointsFunc) WatchEndpoints(_ string, update func(*endpointv3.ClusterLoadAssignment) error) func() {
	e.mu.Lock()
	e.update = update
	e.mu.Unlock()
	return func() {}
}

// AfterInitialized calls back once the first assignment is in, not before,
// never after stop, and at once for a cluster already initialized.
func TestAfterInitialized(t *testing.T) {
	m, _ := newTestManager(t)
	src := &endpointsFunc{}
	m.Endpoints = src
	c, err := m.Stage(parseCluster(t, `{"name": "e", "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Discard(c) })
	var kept, stopped atomic.Int32
	done := make(chan struct{})
	c.AfterInitialized(func() { kept.Add(1); close(done) })
	stop := c.AfterInitialized(func() { stopped.Add(1) })
	if !stop() {
		t.Error("stop of a pending callback reported false")
	}
	time.Sleep(20 * time.Millisecond)
	if kept.Load() != 0 {
		t.Fatal("called back before the cluster was initialized")
	}
	src.mu.Lock()
	update := src.update
	src.mu.Unlock()
	if update == nil {
		t.Fatal("the cluster did not watch its endpoints")
	}
	if err := update(&endpointv3.ClusterLoadAssignment{ClusterName: "e"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("no call back after the first assignment")
	}
	late := make(chan struct{})
	if c.AfterInitialized(func() { close(late) })() {
		t.Error("stop after the call reported true")
	}
	select {
	case <-late:
	case <-time.After(5 * time.Second):
		t.Fatal("no call back for an initialized cluster")
	}
	time.Sleep(20 * time.Millisecond)
	if kept.Load() != 1 || stopped.Load() != 0 {
		t.Errorf("calls: kept %d, stopped %d; want 1, 0", kept.Load(), stopped.Load())
	}
}

// Initialized's channel is made only when asked for before initialization
// and closed then; IsInitialized never makes it, and a cluster asked after
// initialization hands out a closed channel.
func TestInitializedChannel(t *testing.T) {
	m, _ := newTestManager(t)
	src := &endpointsFunc{}
	m.Endpoints = src
	stage := func(name string) *Cluster {
		c, err := m.Stage(parseCluster(t, `{"name": "`+name+`", "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": {}}`))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Discard(c) })
		return c
	}
	init := func(c *Cluster) {
		src.mu.Lock()
		update := src.update
		src.mu.Unlock()
		if err := update(&endpointv3.ClusterLoadAssignment{ClusterName: c.Name}); err != nil {
			t.Fatal(err)
		}
	}

	a := stage("a")
	if a.IsInitialized() {
		t.Fatal("initialized before its first assignment")
	}
	if a.initCh != nil {
		t.Fatal("IsInitialized made the channel")
	}
	ch := a.Initialized()
	select {
	case <-ch:
		t.Fatal("channel closed before initialization")
	default:
	}
	init(a)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("channel asked for before initialization not closed by it")
	}
	if !a.IsInitialized() {
		t.Error("IsInitialized false after initialization")
	}

	b := stage("b")
	init(b)
	if b.initCh != nil {
		t.Error("channel made though nobody asked")
	}
	select {
	case <-b.Initialized():
	default:
		t.Error("Initialized of an initialized cluster is not closed")
	}
}

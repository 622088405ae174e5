package upstream

import (
	"context"
	"slices"
)

// Initialized is closed once the cluster has its first host set: at once
// for STATIC, after the first resolution round for DNS types, after the first
// assignment for EDS (or at once when the manager has no EndpointSource).
// With health_checks it also waits, as Envoy's warming does, until every
// host of that first set has had its first check.
func (c *Cluster) Initialized() <-chan struct{} {
	c.initMu.Lock()
	defer c.initMu.Unlock()
	if c.initDone {
		return closedChan
	}
	if c.initCh == nil {
		c.initCh = make(chan struct{})
	}
	return c.initCh
}

// IsInitialized reports whether the cluster is initialized (Initialized
// is closed), without making Initialized's channel.
func (c *Cluster) IsInitialized() bool {
	c.initMu.Lock()
	defer c.initMu.Unlock()
	return c.initDone
}

// closedChan is Initialized's answer once a cluster is initialized.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// AfterInitialized runs f on its own goroutine once the cluster is
// initialized (at once if it is), with no goroutine waiting meanwhile: 10,000
// warming clusters need no 10,000 goroutines. stop cancels a call not yet
// started and reports whether it did.
func (c *Cluster) AfterInitialized(f func()) (stop func() bool) {
	c.initMu.Lock()
	if c.initDone {
		c.initMu.Unlock()
		go f()
		return func() bool { return false }
	}
	e := &f
	c.onInit = append(c.onInit, e)
	c.initMu.Unlock()
	return func() bool {
		c.initMu.Lock()
		defer c.initMu.Unlock()
		n := len(c.onInit)
		c.onInit = slices.DeleteFunc(c.onInit, func(x *func()) bool { return x == e })
		if len(c.onInit) == 0 {
			c.onInit = nil
		}
		return len(c.onInit) < n
	}
}

// markInitialized records that discovery produced the first host set.
func (c *Cluster) markInitialized() {
	c.discovered.Store(true)
	if c.hc != nil && !c.hc.synced.Load() {
		c.hc.initDone.Store(true) // no hosts to check
	}
	c.tryInitialized()
}

func (c *Cluster) tryInitialized() {
	if c.discovered.Load() && (c.hc == nil || c.hc.initDone.Load()) {
		c.initOnce.Do(func() {
			c.initMu.Lock()
			c.initDone = true
			if c.initCh != nil {
				close(c.initCh)
			}
			fs := c.onInit
			c.onInit = nil
			c.initMu.Unlock()
			for _, f := range fs {
				go (*f)()
			}
		})
	}
}

// stopContext is the context drain cancels (already cancelled once the
// cluster drains).
func (c *Cluster) stopContext() context.Context {
	c.initMu.Lock()
	defer c.initMu.Unlock()
	if c.stopCtx == nil {
		c.stopCtx, c.stop = context.WithCancel(context.Background())
		if c.draining.Load() {
			c.stop()
		}
	}
	return c.stopCtx
}

package listener

import (
	"sync/atomic"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/drain"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/proxy/transport"
)

// This file is Envoy's filter chain only update ("in place" listener
// update, ListenerImpl::supportUpdateFilterChain and
// ListenerManagerImpl::inPlaceFilterChainUpdate): when a listener changes
// only in its filter chains, the new listener shares every filter chain whose
// FilterChain message is unchanged, with that chain's connections, which
// keep running untouched; only connections on removed or changed chains
// drain.

// SupportsInPlaceUpdate reports whether p may replace l by an in-place
// filter chain update: l is in service and not draining, p has filter
// chains, and p differs from l's config at most in filter_chains,
// default_filter_chain and filter_chain_matcher. Otherwise the update is a
// full one: a new listener, and l drains as a whole.
func (l *Listener) SupportsInPlaceUpdate(p *listenerv3.Listener) bool {
	if l == nil || l.Draining() || len(p.GetFilterChains()) == 0 || (l.bindToPort && l.sock == nil) {
		return false
	}
	return proto.Equal(withoutChains(l.Proto), withoutChains(p))
}

// withoutChains is a copy of p without the fields an in-place update may
// change.
func withoutChains(p *listenerv3.Listener) *listenerv3.Listener {
	c := proto.Clone(p).(*listenerv3.Listener)
	c.FilterChains, c.DefaultFilterChain, c.FilterChainMatcher = nil, nil, nil
	return c
}

// BuildInPlace compiles p, which origin.SupportsInPlaceUpdate, as Build
// does, except that each filter chain equal (as a whole FilterChain message,
// name included) to one of origin's filter_chains, and a default chain equal
// to origin's default_filter_chain, is origin's compiled chain rather than a
// new one. Put it in service with UpdateInPlace; until then origin still
// owns the shared chains, and Close on the result leaves them alone.
func BuildInPlace(p *listenerv3.Listener, ctx *netfilter.Context, ids *atomic.Uint64, origin *Listener) (*Listener, error) {
	return build(p, ctx, ids, origin)
}

// UpdateInPlace puts l, built by BuildInPlace from old, in service in
// old's place: l takes over old's listen socket, the chains it shares with
// old and the connections on them (and those not yet matched to a chain),
// which it counts from now on; old keeps only the connections on its chains
// l does not have, and their drain starts: responses carry "Connection:
// close" (HTTP/2: GOAWAY) at once, whatever the drain strategy, and
// connections idle for a second are closed, for the drain time. The caller
// closes what is left of old's connections at the end of the drain
// (CloseAll, Close), as for a full drain. It returns how many of old's
// chains drain.
func (l *Listener) UpdateInPlace(old *Listener) (draining int) {
	if old.sock != nil && l.sock == nil {
		l.sock = old.sock
		l.sock.owner.Store(l)
	}
	kept := map[*chain]bool{}
	for _, c := range l.allChains() {
		kept[c] = true
		c.owner.CompareAndSwap(old, l)
	}
	var dropped []*chain
	for _, c := range old.allChains() {
		if !kept[c] {
			dropped = append(dropped, c)
		}
	}
	old.mu.Lock()
	l.mu.Lock()
	old.successor.Store(l)
	for t := range old.conns {
		if c := t.chain.Load(); c == nil || kept[c] {
			delete(old.conns, t)
			l.conns[t] = struct{}{}
			t.owner.Store(l)
			l.wg.Add(1)
			old.wg.Done()
		}
	}
	l.mu.Unlock()
	old.mu.Unlock()
	for _, c := range dropped {
		c.drain.StartImmediate()
	}
	old.closeIdleFor(old.drainTime)
	return len(dropped)
}

// settle takes t, owned by l whose mu is held, on to the listener that
// replaced l in place, if any (and so on), and returns t's owner then, its
// mu held: a connection that reached l just as an in-place update replaced
// l is matched to the new listener's chains.
func settle(t *tracked, l *Listener) *Listener {
	for next := l.successor.Load(); next != nil; next = l.successor.Load() {
		next.mu.Lock()
		delete(l.conns, t)
		next.conns[t] = struct{}{}
		t.owner.Store(next)
		next.wg.Add(1)
		l.wg.Done()
		l.mu.Unlock()
		l = next
	}
	return l
}

// allChains is l's filter chains and its default chain.
func (l *Listener) allChains() []*chain {
	all := l.chains[:len(l.chains):len(l.chains)]
	if l.defaultChain != nil {
		all = append(all, l.defaultChain)
	}
	return all
}

// chainsByKey indexes l's filter_chains (not the default chain) by their
// message.
func (l *Listener) chainsByKey() map[string]*chain {
	m := make(map[string]*chain, len(l.chains))
	for _, c := range l.chains {
		m[c.key] = c
	}
	return m
}

// chainFor is the chain in reuse (by message) equal to fc, else a new one
// compiled with its own drain manager.
func (l *Listener) chainFor(fc *listenerv3.FilterChain, reuse map[string]*chain, ctx *netfilter.Context, tctx *transport.Context) (*chain, error) {
	key, err := proto.MarshalOptions{Deterministic: true}.Marshal(fc)
	if err != nil {
		return nil, err
	}
	if c := reuse[string(key)]; c != nil && proto.Equal(c.proto, fc) {
		return c, nil
	}
	m := &drain.Manager{Gradual: l.drainGradual, Time: l.drainTime}
	ctx.Drain = m
	c, err := buildChain(fc, ctx, tctx)
	if err != nil {
		return nil, err
	}
	c.proto, c.key, c.drain = fc, string(key), m
	c.owner.Store(l)
	return c, nil
}

// ConnsOnChain is how many of l's open connections were matched to the
// filter chain named name (the default chain too, by its name), for tests
// and the admin.
func (l *Listener) ConnsOnChain(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for t := range l.conns {
		if c := t.chain.Load(); c != nil && c.name == name {
			n++
		}
	}
	return n
}

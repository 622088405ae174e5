package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/outrider-proxy/outrider/telemetry/stats"
	tlsctx "github.com/outrider-proxy/outrider/tls"
)

// secretProvider is the tlsctx.SecretProvider, Notifier and Tracker every
// transport socket is compiled with: names subscribed over SDS resolve from
// what SDS delivered (pending until then), the others from
// static_resources.secrets. Its lock is taken after dynamic.mu, never before.
type secretProvider struct {
	static *tlsctx.Secrets
	dyn    tlsctx.Secrets // delivered SDS secrets

	mu   sync.Mutex
	sds  map[string]*sdsSecret // names with an sds_config
	subs map[int]func()
	next int
	ctxs []func() tlsctx.CertSource // weak references to every compiled TLS context, for /certs

	wl *workloadSource // --spiffe-workload-api; nil: none
}

// sdsSecret is one secret name subscribed through an sds_config.
type sdsSecret struct {
	name    string
	src     source        // nil until subscribed
	ready   chan struct{} // closed once the secret arrived or its initial fetch timed out
	done    bool          // ready is closed
	arrived bool
	msg     *tlsv3.Secret // last good secret; nil before one arrived
	version string
	updated time.Time
	timeout time.Duration // initial_fetch_timeout; 0: none

	attempt, success, rejected, fetchTimeout *stats.Counter
}

func newSecretProvider(static *tlsctx.Secrets) *secretProvider {
	return &secretProvider{static: static, sds: map[string]*sdsSecret{}, subs: map[int]func(){}}
}

// TLSCertificate implements tlsctx.SecretProvider.
func (p *secretProvider) TLSCertificate(name string) (*tls.Certificate, error) {
	if !p.isSDS(name) {
		c, err := p.static.TLSCertificate(name)
		if err != nil && p.wl != nil && errors.Is(err, tlsctx.ErrSecretNotFound) {
			return p.wl.TLSCertificate(name)
		}
		return c, err
	}
	c, err := p.dyn.TLSCertificate(name)
	if err != nil {
		return nil, fmt.Errorf("tls_certificate secret %q (SDS): %w", name, tlsctx.ErrSecretPending)
	}
	return c, nil
}

// ValidationContext implements tlsctx.SecretProvider.
func (p *secretProvider) ValidationContext(name string) (*tlsv3.CertificateValidationContext, error) {
	if !p.isSDS(name) {
		v, err := p.static.ValidationContext(name)
		if err != nil && p.wl != nil && errors.Is(err, tlsctx.ErrSecretNotFound) {
			return p.wl.ValidationContext(name)
		}
		return v, err
	}
	v, err := p.dyn.ValidationContext(name)
	if err != nil {
		return nil, fmt.Errorf("validation_context secret %q (SDS): %w", name, tlsctx.ErrSecretPending)
	}
	return v, nil
}

func (p *secretProvider) isSDS(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sds[name] != nil
}

// Subscribe implements tlsctx.Notifier.
func (p *secretProvider) Subscribe(fn func()) (cancel func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := p.next
	p.next++
	p.subs[id] = fn
	return func() {
		p.mu.Lock()
		delete(p.subs, id)
		p.mu.Unlock()
	}
}

func (p *secretProvider) notify() {
	p.mu.Lock()
	ids := make([]int, 0, len(p.subs))
	for id := range p.subs {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	fns := make([]func(), 0, len(ids))
	for _, id := range ids {
		fns = append(fns, p.subs[id])
	}
	p.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// Track implements tlsctx.Tracker.
func (p *secretProvider) Track(ref func() tlsctx.CertSource) {
	p.mu.Lock()
	p.ctxs = append(p.ctxs, ref)
	p.mu.Unlock()
}

// contexts is every TLS context still in use; those collected since (their
// listener or cluster was removed) are dropped from the list.
func (p *secretProvider) contexts() []tlsctx.CertSource {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []tlsctx.CertSource
	live := p.ctxs[:0]
	for _, ref := range p.ctxs {
		if c := ref(); c != nil {
			out = append(out, c)
			live = append(live, ref)
		}
	}
	clear(p.ctxs[len(live):])
	p.ctxs = live
	return out
}

// subscribers is how many TLS contexts follow the secrets now.
func (p *secretProvider) subscribers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.subs)
}

// expect registers name as an SDS secret (pending until it arrives) and
// returns its entry; the first registration's initial_fetch_timeout holds.
func (p *secretProvider) expect(st *stats.Store, name string, cs *corev3.ConfigSource) *sdsSecret {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.sds[name]; s != nil {
		return s
	}
	timeout := 15 * time.Second // Envoy's default initial_fetch_timeout
	if t := cs.GetInitialFetchTimeout(); t != nil {
		timeout = t.AsDuration()
	}
	sc := st.Scope("sds." + name)
	s := &sdsSecret{name: name, ready: make(chan struct{}), timeout: timeout,
		attempt: sc.Counter("update_attempt"), success: sc.Counter("update_success"),
		rejected: sc.Counter("update_rejected"), fetchTimeout: sc.Counter("init_fetch_timeout")}
	sc.Counter("update_failure")
	sc.Counter("key_rotation_failed")
	p.sds[name] = s
	return s
}

// markDone ends the warming of s (arrived or timed out).
func (p *secretProvider) markDone(s *sdsSecret) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !s.done {
		s.done = true
		close(s.ready)
	}
}

// allReady reports whether every named SDS secret arrived or timed out.
func (p *secretProvider) allReady(names []string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range names {
		if s := p.sds[n]; s != nil && !s.done {
			return false
		}
	}
	return true
}

func (p *secretProvider) readyChans(names []string) []chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []chan struct{}
	for _, n := range names {
		if s := p.sds[n]; s != nil {
			out = append(out, s.ready)
		}
	}
	return out
}

// sdsRef is one SdsSecretConfig of a transport socket; cs is nil for a
// static secret.
type sdsRef struct {
	path, name string
	cs         *corev3.ConfigSource
}

// transportSDSRefs lists the SDS secret configs of a TLS transport socket.
func transportSDSRefs(path string, ts *corev3.TransportSocket) []sdsRef {
	a := ts.GetTypedConfig()
	if a == nil {
		return nil
	}
	var cc *tlsv3.CommonTlsContext
	down, up := &tlsv3.DownstreamTlsContext{}, &tlsv3.UpstreamTlsContext{}
	switch {
	case a.MessageIs(down):
		if a.UnmarshalTo(down) != nil {
			return nil
		}
		cc = down.GetCommonTlsContext()
	case a.MessageIs(up):
		if a.UnmarshalTo(up) != nil {
			return nil
		}
		cc = up.GetCommonTlsContext()
	default:
		return nil
	}
	path += ".transport_socket.typed_config.common_tls_context"
	var out []sdsRef
	for i, sc := range cc.GetTlsCertificateSdsSecretConfigs() {
		out = append(out, sdsRef{fmt.Sprintf("%s.tls_certificate_sds_secret_configs[%d]", path, i), sc.GetName(), sc.GetSdsConfig()})
	}
	if sc := cc.GetValidationContextSdsSecretConfig(); sc != nil {
		out = append(out, sdsRef{path + ".validation_context_sds_secret_config", sc.GetName(), sc.GetSdsConfig()})
	}
	if sc := cc.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); sc != nil {
		out = append(out, sdsRef{path + ".combined_validation_context.validation_context_sds_secret_config", sc.GetName(), sc.GetSdsConfig()})
	}
	return out
}

func listenerSDSRefs(path string, lp *listenerv3.Listener) []sdsRef {
	var out []sdsRef
	for i, fc := range lp.GetFilterChains() {
		out = append(out, transportSDSRefs(fmt.Sprintf("%s.filter_chains[%d]", path, i), fc.GetTransportSocket())...)
	}
	if dc := lp.GetDefaultFilterChain(); dc != nil {
		out = append(out, transportSDSRefs(path+".default_filter_chain", dc.GetTransportSocket())...)
	}
	return out
}

func clusterSDSRefs(path string, c *clusterv3.Cluster) []sdsRef {
	refs := transportSDSRefs(path, c.GetTransportSocket())
	for i, m := range c.GetTransportSocketMatches() {
		refs = append(refs, transportSDSRefs(fmt.Sprintf("%s.transport_socket_matches[%d]", path, i), m.GetTransportSocket())...)
	}
	return refs
}

// expectAll registers the SDS names of refs before the contexts using them
// are compiled.
func (p *secretProvider) expectAll(st *stats.Store, refs []sdsRef) {
	for _, r := range refs {
		if r.cs != nil && r.name != "" {
			p.expect(st, r.name, r.cs)
		}
	}
}

// watchSecrets subscribes the SDS names of refs on their config sources
// and returns them, for the warming of what uses them.
func (d *dynamic) watchSecrets(refs []sdsRef) ([]string, error) {
	var names []string
	touched := map[source]bool{}
	for _, r := range refs {
		if r.cs == nil || r.name == "" {
			continue
		}
		src, err := d.clientFor(r.path+".sds_config", r.cs)
		if err != nil {
			return nil, err
		}
		s := d.sp.expect(d.s.stats, r.name, r.cs)
		d.sp.mu.Lock()
		first := s.src == nil
		if first {
			s.src = src
		}
		d.sp.mu.Unlock()
		names = append(names, r.name)
		if first {
			touched[src] = true
			if s.timeout > 0 {
				go d.secretTimeout(s)
			}
		}
	}
	for src := range touched {
		d.sp.mu.Lock()
		var all []string
		for n, s := range d.sp.sds {
			if s.src == src {
				all = append(all, n)
			}
		}
		d.sp.mu.Unlock()
		sort.Strings(all)
		d.setNames(src, secretType, all, d.onSecrets)
	}
	return names, nil
}

// secretTimeout ends the warming of s after its initial_fetch_timeout.
func (d *dynamic) secretTimeout(s *sdsSecret) {
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case <-s.ready:
		return
	case <-d.stop:
		return
	case <-t.C:
	}
	s.fetchTimeout.Inc()
	d.sp.markDone(s)
	d.checkWarming()
}

// waitSecrets blocks until every named secret arrived or timed out; false
// when the server stops first.
func (d *dynamic) waitSecrets(names []string) bool {
	for _, ch := range d.sp.readyChans(names) {
		select {
		case <-ch:
		case <-d.stop:
			return false
		}
	}
	return true
}

// staticSecrets is every SDS name subscribed so far, which at start is
// those of the bootstrap's static listeners and clusters.
func (d *dynamic) staticSecrets() []string {
	d.sp.mu.Lock()
	defer d.sp.mu.Unlock()
	return sortedKeys(d.sp.sds)
}

// pruneSecrets drops the SDS subscriptions that no listener or cluster
// references any more, as Envoy unsubscribes a secret when its last TLS
// context goes: the name leaves its source's subscription, its secret is
// forgotten and its initial-fetch timer ends. Run after LDS and CDS
// changes.
func (d *dynamic) pruneSecrets() {
	used := map[string]bool{}
	add := func(refs []sdsRef) {
		for _, r := range refs {
			if r.cs != nil {
				used[r.name] = true
			}
		}
	}
	sr := d.s.opts.Bootstrap.GetStaticResources()
	for _, c := range sr.GetClusters() {
		add(clusterSDSRefs("", c))
	}
	for _, l := range sr.GetListeners() {
		add(listenerSDSRefs("", l))
	}
	d.mu.Lock()
	for _, c := range d.clusters {
		add(c.sds)
	}
	for _, w := range d.warmCl {
		add(clusterSDSRefs("", w.cfg))
	}
	for _, l := range d.listeners {
		add(listenerSDSRefs("", l.Proto))
	}
	for _, w := range d.warming {
		add(listenerSDSRefs("", w.l.Proto))
	}
	if b := d.building; b != nil && b.l != nil {
		add(listenerSDSRefs("", b.l.Proto))
	}
	d.mu.Unlock()

	p := d.sp
	p.mu.Lock()
	var gone []string
	touched := map[source]bool{}
	for name, s := range p.sds {
		if used[name] {
			continue
		}
		gone = append(gone, name)
		delete(p.sds, name)
		if !s.done {
			s.done = true
			close(s.ready)
		}
		if s.src != nil {
			touched[s.src] = true
		}
	}
	rest := map[source][]string{}
	for src := range touched {
		rest[src] = []string{}
	}
	for name, s := range p.sds {
		if touched[s.src] {
			rest[s.src] = append(rest[s.src], name)
		}
	}
	p.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	p.dyn.Remove(gone...)
	for src, names := range rest {
		sort.Strings(names)
		src.SetNames(secretType, names)
	}
}

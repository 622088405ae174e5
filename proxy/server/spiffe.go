package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/listener"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	tlsctx "github.com/outrider-proxy/outrider/tls"
)

// Secret names the Workload API source serves, as SPIRE's agent names its
// SDS secrets (default_svid_name, default_bundle_name,
// default_all_bundles_name); each SVID is also served under its SPIFFE ID
// and each bundle under its trust domain's ID ("spiffe://example.org").
const (
	SPIFFEDefaultSVIDName   = "default"
	SPIFFEDefaultBundleName = "ROOTCA"
	SPIFFEAllBundlesName    = "ALL"
)

// workloadSource follows the SPIFFE Workload API (--spiffe-workload-api)
// and serves its SVIDs and bundles as secrets to SDS secret configs without
// an sds_config (the names static_resources.secrets does not hold). Its
// secrets are pending until the first X.509 context arrives.
type workloadSource struct {
	addr    string
	log     *slog.Logger
	secrets tlsctx.Secrets
	arrived atomic.Bool
	notify  func() // the secret provider's notify; called after each update

	ready     chan struct{} // closed at the first update
	readyOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{} // closed when the watch goroutine returned

	updates, rejected, errs *stats.Counter
	svids                   *stats.Gauge

	// The last accepted X.509 context as secrets, for /config_dump.
	mu      sync.Mutex
	last    []*tlsv3.Secret
	updated time.Time
	version uint64 // accepted updates
}

// dump returns the last accepted secrets with the time they came and
// their version (the count of accepted updates); nil before the first.
func (w *workloadSource) dump() ([]*tlsv3.Secret, time.Time, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last, w.updated, strconv.FormatUint(w.version, 10)
}

// useWorkloadAPI makes the Workload API at addr the fallback of p for
// secret names without an sds_config that static_resources.secrets lacks.
func (p *secretProvider) useWorkloadAPI(addr string, st *stats.Store, log *slog.Logger) error {
	w, err := newWorkloadSource(addr, st, log)
	if err != nil {
		return err
	}
	w.notify = p.notify
	p.wl = w
	return nil
}

// newWorkloadSource prepares a source for the Workload API at addr
// ("unix:///path" or "tcp://ip:port"); nothing is dialed until start.
func newWorkloadSource(addr string, st *stats.Store, log *slog.Logger) (*workloadSource, error) {
	if _, err := workloadapi.TargetFromAddress(addr); err != nil {
		return nil, fmt.Errorf("--spiffe-workload-api %q: %w", addr, err)
	}
	sc := st.Scope("spiffe_workload_api")
	return &workloadSource{
		addr: addr, log: log, ready: make(chan struct{}), done: make(chan struct{}),
		updates: sc.Counter("update_success"), rejected: sc.Counter("update_rejected"),
		errs: sc.Counter("watch_error"), svids: sc.Gauge("svids"),
	}, nil
}

// start watches the Workload API until stop; go-spiffe reconnects with
// backoff after errors.
func (w *workloadSource) start() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		defer close(w.done)
		c, err := workloadapi.New(ctx, workloadapi.WithAddr(w.addr))
		if err != nil {
			w.log.Error("SPIFFE Workload API client", "addr", w.addr, "err", err)
			return
		}
		defer c.Close()
		err = c.WatchX509Context(ctx, w)
		if err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			w.log.Error("SPIFFE Workload API watch ended", "addr", w.addr, "err", err)
		}
	}()
}

// stop ends the watch and waits for its goroutine.
func (w *workloadSource) stop() {
	if w.cancel == nil {
		return
	}
	w.cancel()
	<-w.done
}

// OnX509ContextUpdate implements workloadapi.X509ContextWatcher.
func (w *workloadSource) OnX509ContextUpdate(xc *workloadapi.X509Context) {
	secs, err := x509ContextSecrets(xc)
	if err == nil {
		err = w.secrets.Update(secs...)
	}
	if err != nil {
		w.rejected.Inc()
		w.log.Error("SPIFFE Workload API update rejected", "err", err)
		return
	}
	w.mu.Lock()
	w.last, w.updated = secs, time.Now()
	w.version++
	w.mu.Unlock()
	w.updates.Inc()
	w.svids.Set(int64(len(xc.SVIDs)))
	w.arrived.Store(true)
	w.readyOnce.Do(func() { close(w.ready) })
	if w.notify != nil {
		w.notify()
	}
}

// OnX509ContextWatchError implements workloadapi.X509ContextWatcher.
func (w *workloadSource) OnX509ContextWatchError(err error) {
	if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return
	}
	w.errs.Inc()
	w.log.Warn("SPIFFE Workload API watch error", "addr", w.addr, "err", err)
}

// TLSCertificate resolves an SVID by name; pending before the first update.
func (w *workloadSource) TLSCertificate(name string) (*tls.Certificate, error) {
	if !w.arrived.Load() {
		return nil, fmt.Errorf("tls_certificate secret %q (SPIFFE Workload API): %w", name, tlsctx.ErrSecretPending)
	}
	return w.secrets.TLSCertificate(name)
}

// ValidationContext resolves a bundle by name; pending before the first update.
func (w *workloadSource) ValidationContext(name string) (*tlsv3.CertificateValidationContext, error) {
	if !w.arrived.Load() {
		return nil, fmt.Errorf("validation_context secret %q (SPIFFE Workload API): %w", name, tlsctx.ErrSecretPending)
	}
	return w.secrets.ValidationContext(name)
}

// spiffeValidation is a validation context with Envoy's SPIFFE certificate
// validator over the trust domains, as SPIRE's SDS builds it.
func spiffeValidation(tds ...*tlsv3.SPIFFECertValidatorConfig_TrustDomain) (*tlsv3.CertificateValidationContext, error) {
	a, err := anypb.New(&tlsv3.SPIFFECertValidatorConfig{TrustDomains: tds})
	if err != nil {
		return nil, err
	}
	return &tlsv3.CertificateValidationContext{CustomValidatorConfig: &corev3.TypedExtensionConfig{
		Name: tlsctx.SPIFFEValidatorName, TypedConfig: a,
	}}, nil
}

// x509ContextSecrets converts a Workload API X.509 context into the secrets
// SPIRE's SDS would serve: "default" and each SPIFFE ID for the SVIDs (the
// first SVID is the default one), "ROOTCA" for the bundle of the default
// SVID's trust domain, each trust domain's ID for its bundle, and "ALL" for
// every bundle. Bundles are SPIFFE certificate validator configs, as SPIRE
// serves them to Envoy 1.18 and later.
func x509ContextSecrets(xc *workloadapi.X509Context) ([]*tlsv3.Secret, error) {
	if len(xc.SVIDs) == 0 {
		return nil, errors.New("X.509 context without SVIDs")
	}
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	var out []*tlsv3.Secret
	for i, svid := range xc.SVIDs {
		certs, key, err := svid.Marshal()
		if err != nil {
			return nil, fmt.Errorf("SVID %s: %w", svid.ID, err)
		}
		tc := &tlsv3.TlsCertificate{CertificateChain: inline(certs), PrivateKey: inline(key)}
		out = append(out, &tlsv3.Secret{Name: svid.ID.String(), Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: tc}})
		if i == 0 {
			out = append(out, &tlsv3.Secret{Name: SPIFFEDefaultSVIDName, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: tc}})
		}
	}
	own := xc.SVIDs[0].ID.TrustDomain()
	all := &tlsv3.SPIFFECertValidatorConfig{}
	bundles := xc.Bundles.Bundles()
	sort.Slice(bundles, func(i, j int) bool { return bundles[i].TrustDomain().Name() < bundles[j].TrustDomain().Name() })
	for _, b := range bundles {
		pem, err := b.Marshal()
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", b.TrustDomain(), err)
		}
		td := &tlsv3.SPIFFECertValidatorConfig_TrustDomain{Name: b.TrustDomain().Name(), TrustBundle: inline(pem)}
		vc, err := spiffeValidation(td)
		if err != nil {
			return nil, err
		}
		out = append(out, &tlsv3.Secret{Name: b.TrustDomain().IDString(), Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}})
		if b.TrustDomain() == own {
			out = append(out, &tlsv3.Secret{Name: SPIFFEDefaultBundleName, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}})
		}
		all.TrustDomains = append(all.TrustDomains, td)
	}
	if len(all.TrustDomains) > 0 {
		vc, err := spiffeValidation(all.TrustDomains...)
		if err != nil {
			return nil, err
		}
		out = append(out, &tlsv3.Secret{Name: SPIFFEAllBundlesName, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}})
	}
	return out, nil
}

// workloadWarmTimeout bounds how long a static listener whose secrets come
// from the Workload API waits for the first SVIDs before accepting anyway
// (as Envoy's initial_fetch_timeout default ends SDS warming).
const workloadWarmTimeout = 15 * time.Second

// usesWorkloadAPI reports whether a static listener names a secret without
// an sds_config that static_resources.secrets lacks: one the Workload API
// serves.
func (s *Server) usesWorkloadAPI(l *listener.Listener) bool {
	for _, r := range listenerSDSRefs("", l.Proto) {
		if r.cs != nil || r.name == "" {
			continue
		}
		_, cerr := s.secrets.static.TLSCertificate(r.name)
		_, verr := s.secrets.static.ValidationContext(r.name)
		if cerr != nil && verr != nil {
			return true
		}
	}
	return false
}

// serveAfterWorkloadAPI starts accepting on l once the Workload API's first
// X.509 context arrived, or after workloadWarmTimeout; not at all when the
// server shuts down first.
func (s *Server) serveAfterWorkloadAPI(l *listener.Listener) {
	t := time.NewTimer(workloadWarmTimeout)
	defer t.Stop()
	select {
	case <-s.secrets.wl.ready:
	case <-t.C:
		s.log.Warn("SPIFFE Workload API: no SVIDs yet; listener accepts without them", "listener", l.Name)
	case <-s.stopGauges:
		return
	}
	l.Serve()
}

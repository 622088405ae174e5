package tlsctx

import (
	"crypto/tls"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"weak"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
)

var commonFields = []string{
	"tls_params", "tls_certificates", "tls_certificate_sds_secret_configs", "alpn_protocols",
	"validation_context", "validation_context_sds_secret_config", "combined_validation_context",
}

// common is the compiled part of a CommonTlsContext shared by servers and clients.
type common struct {
	params params
	certs  []*tls.Certificate
	paths  []string // per certificate: its chain's file name, "<inline>" otherwise
	val    *validator
	alpn   []string
}

// compileCommon compiles a CommonTlsContext, resolving SDS secrets through secrets.
func compileCommon(cc *tlsv3.CommonTlsContext, secrets SecretProvider, path string) (*common, error) {
	if err := confcheck.Fields(cc, path, commonFields...); err != nil {
		return nil, err
	}
	out := &common{alpn: cc.GetAlpnProtocols()}
	var err error
	if out.params, err = compileParams(cc.GetTlsParams(), path+".tls_params"); err != nil {
		return nil, err
	}
	for i, tc := range cc.GetTlsCertificates() {
		c, err := loadCertificate(tc, fmt.Sprintf("%s.tls_certificates[%d]", path, i))
		if err != nil {
			return nil, err
		}
		out.certs = append(out.certs, c)
		out.paths = append(out.paths, sourcePath(tc.GetCertificateChain()))
	}
	for i, sc := range cc.GetTlsCertificateSdsSecretConfigs() {
		p := fmt.Sprintf("%s.tls_certificate_sds_secret_configs[%d]", path, i)
		c, err := sdsCertificate(sc, secrets, p)
		if err != nil {
			return nil, err
		}
		out.certs = append(out.certs, c)
		out.paths = append(out.paths, "<inline>")
	}
	var vc *tlsv3.CertificateValidationContext
	vpath := path
	switch t := cc.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc, vpath = t.ValidationContext, path+".validation_context"
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		vpath = path + ".validation_context_sds_secret_config"
		if vc, err = sdsValidation(t.ValidationContextSdsSecretConfig, secrets, vpath); err != nil {
			return nil, err
		}
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		vpath = path + ".combined_validation_context"
		cvc := t.CombinedValidationContext
		if err := confcheck.Fields(cvc, vpath, "default_validation_context", "validation_context_sds_secret_config"); err != nil {
			return nil, err
		}
		dyn, err := sdsValidation(cvc.GetValidationContextSdsSecretConfig(), secrets, vpath+".validation_context_sds_secret_config")
		if err != nil {
			return nil, err
		}
		// As Envoy: the default context with the dynamic one merged into it.
		vc = &tlsv3.CertificateValidationContext{}
		if d := cvc.GetDefaultValidationContext(); d != nil {
			vc = proto.Clone(d).(*tlsv3.CertificateValidationContext)
		}
		proto.Merge(vc, dyn)
	}
	if vc != nil {
		if out.val, err = compileValidation(vc, vpath); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func sdsCertificate(sc *tlsv3.SdsSecretConfig, secrets SecretProvider, path string) (*tls.Certificate, error) {
	if sc.GetName() == "" {
		return nil, fmt.Errorf("%s.name: required", path)
	}
	if secrets == nil {
		return nil, fmt.Errorf("%s: secret %q: %w", path, sc.GetName(), ErrSecretNotFound)
	}
	c, err := secrets.TLSCertificate(sc.GetName())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func sdsValidation(sc *tlsv3.SdsSecretConfig, secrets SecretProvider, path string) (*tlsv3.CertificateValidationContext, error) {
	if sc.GetName() == "" {
		return nil, fmt.Errorf("%s.name: required", path)
	}
	if secrets == nil {
		return nil, fmt.Errorf("%s: secret %q: %w", path, sc.GetName(), ErrSecretNotFound)
	}
	vc, err := secrets.ValidationContext(sc.GetName())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return vc, nil
}

// reloader keeps a compiled state behind an atomic pointer and recompiles it
// when the secret provider notifies an update.
// A state stays nil while a secret it needs is pending (ErrSecretPending).
type reloader[T any] struct {
	state   atomic.Pointer[T]
	compile func() (*T, error)
	lastErr atomic.Pointer[error]
	cancel  func()
	updated atomic.Pointer[func()] // called after each successful reload; nil: none
}

// OnReload sets fn to be called after each reload that installed new
// secrets (Envoy's ssl_context_update_by_sds).
func (r *reloader[T]) OnReload(fn func()) { r.updated.Store(&fn) }

func (r *reloader[T]) init(secrets SecretProvider, compile func() (*T, error)) error {
	r.compile = compile
	n, notifies := secrets.(Notifier)
	if notifies {
		// Subscribed before the first compile, so that a secret delivered
		// meanwhile is not missed. The subscription holds r weakly and is
		// cancelled once r is garbage collected: a context dropped with its
		// listener or cluster stops following secrets without anyone having
		// to close it.
		wr := weak.Make(r)
		cancel := n.Subscribe(func() {
			if r := wr.Value(); r != nil {
				_ = r.Reload()
			}
		})
		r.cancel = cancel
		runtime.AddCleanup(r, func(cancel func()) { cancel() }, cancel)
	}
	st, err := compile()
	if err != nil && !(notifies && errors.Is(err, ErrSecretPending)) {
		r.Close()
		return err
	}
	// A Reload that ran meanwhile compiled secrets at least as new: keep it.
	if err != nil {
		if r.state.Load() == nil {
			r.lastErr.CompareAndSwap(nil, &err)
		}
	} else {
		r.state.CompareAndSwap(nil, st)
	}
	return nil
}

// Ready reports whether every secret the context needs has arrived and
// compiled, so handshakes can use it.
func (r *reloader[T]) Ready() bool { return r.state.Load() != nil }

// Reload recompiles from the current secrets; on error the previous state
// stays in use and the error is returned (and kept for LastError).
func (r *reloader[T]) Reload() error {
	st, err := r.compile()
	if err != nil {
		r.lastErr.Store(&err)
		return err
	}
	r.lastErr.Store(nil)
	r.state.Store(st)
	if fn := r.updated.Load(); fn != nil {
		(*fn)()
	}
	return nil
}

// LastError is the error of the latest failed reload, nil after a success.
func (r *reloader[T]) LastError() error {
	if p := r.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Close stops following secret updates.
func (r *reloader[T]) Close() {
	if r.cancel != nil {
		r.cancel()
	}
}

var errNoCertificate = errors.New("no TLS certificate configured")

// errNotReady fails handshakes of a context whose secrets have not arrived.
var errNotReady = errors.New("TLS secrets have not arrived yet (SDS)")

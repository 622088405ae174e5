// Package tlsctx compiles Envoy's DownstreamTlsContext and UpstreamTlsContext
// into crypto/tls configurations that behave like Envoy's transport sockets:
// certificate selection by SNI, tls_params, ALPN, session resumption and peer
// validation (CA, SAN matchers, SPKI/hash pins, CRL, SPIFFE). Compiled objects
// are immutable except for the secrets they reference, which a SecretProvider
// may swap atomically so that new handshakes use them while established
// connections keep theirs.
package tlsctx

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
)

// SecretProvider resolves the secrets named by tls_certificate_sds_secret_configs
// and validation_context_sds_secret_config. A provider whose secrets change
// should also implement Notifier so compiled contexts pick the change up.
type SecretProvider interface {
	// TLSCertificate returns the certificate and key of a tls_certificate secret.
	TLSCertificate(name string) (*tls.Certificate, error)
	// ValidationContext returns a validation_context secret; callers must not modify it.
	ValidationContext(name string) (*tlsv3.CertificateValidationContext, error)
}

// Notifier is implemented by secret providers whose secrets change at run
// time. Subscribe calls fn after every update; cancel stops the calls.
type Notifier interface {
	Subscribe(fn func()) (cancel func())
}

// ErrSecretNotFound is wrapped by providers when a named secret does not exist.
var ErrSecretNotFound = errors.New("secret not found")

// ErrSecretPending is wrapped by providers (SDS) when a named secret is
// subscribed but has not arrived yet. A context compiled while a secret is
// pending is not ready: it refuses handshakes until the provider notifies
// and the secret compiles (Envoy's NotReadySslSocket).
var ErrSecretPending = errors.New("secret has not arrived yet")

// CheckSecret compiles a secret as Update would (certificate and key, or
// validation context) without storing it; errors name the secret and field.
func CheckSecret(sec *tlsv3.Secret) error {
	if sec.GetName() == "" {
		return errors.New("name: required")
	}
	path := fmt.Sprintf("secret %q", sec.GetName())
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		_, err := loadCertificate(t.TlsCertificate, path+".tls_certificate")
		return err
	case *tlsv3.Secret_ValidationContext:
		_, err := compileValidation(t.ValidationContext, path+".validation_context")
		return err
	}
	return fmt.Errorf("%s: secret type %T not supported by outrider yet", path, sec.GetType())
}

// Secrets is a SecretProvider holding static (bootstrap static_resources.secrets)
// or pushed (SDS) secrets. Update swaps the whole set atomically. The zero
// value is an empty, usable set.
type Secrets struct {
	set atomic.Pointer[secretSet]
	wmu sync.Mutex // serializes Update and Remove

	mu   sync.Mutex
	subs map[int]func()
	next int
}

type secretSet struct {
	certs map[string]*tls.Certificate
	vcs   map[string]*tlsv3.CertificateValidationContext
}

// NewSecrets compiles static_resources.secrets.
func NewSecrets(secrets []*tlsv3.Secret) (*Secrets, error) {
	s := &Secrets{}
	if err := s.Update(secrets...); err != nil {
		return nil, err
	}
	return s, nil
}

// Update adds or replaces the given secrets (by name), compiling certificates
// first so a bad secret changes nothing, then notifies subscribers.
func (s *Secrets) Update(secrets ...*tlsv3.Secret) error {
	s.wmu.Lock()
	old := s.set.Load()
	ns := &secretSet{certs: map[string]*tls.Certificate{}, vcs: map[string]*tlsv3.CertificateValidationContext{}}
	if old != nil {
		for k, v := range old.certs {
			ns.certs[k] = v
		}
		for k, v := range old.vcs {
			ns.vcs[k] = v
		}
	}
	for i, sec := range secrets {
		if sec.GetName() == "" {
			s.wmu.Unlock()
			return fmt.Errorf("secrets[%d].name: required", i)
		}
		path := fmt.Sprintf("secret %q", sec.GetName())
		switch t := sec.GetType().(type) {
		case *tlsv3.Secret_TlsCertificate:
			c, err := loadCertificate(t.TlsCertificate, path+".tls_certificate")
			if err != nil {
				s.wmu.Unlock()
				return err
			}
			ns.certs[sec.GetName()] = c
		case *tlsv3.Secret_ValidationContext:
			ns.vcs[sec.GetName()] = proto.Clone(t.ValidationContext).(*tlsv3.CertificateValidationContext)
		default:
			s.wmu.Unlock()
			return fmt.Errorf("%s: secret type %T not supported by outrider yet", path, t)
		}
	}
	s.set.Store(ns)
	s.wmu.Unlock()
	s.notify()
	return nil
}

// Remove drops the named secrets (no longer subscribed) without notifying:
// contexts that still use them keep their compiled copies.
func (s *Secrets) Remove(names ...string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	old := s.set.Load()
	if old == nil || len(names) == 0 {
		return
	}
	ns := &secretSet{certs: maps.Clone(old.certs), vcs: maps.Clone(old.vcs)}
	for _, n := range names {
		delete(ns.certs, n)
		delete(ns.vcs, n)
	}
	s.set.Store(ns)
}

func (s *Secrets) notify() {
	s.mu.Lock()
	fns := make([]func(), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// Subscribe implements Notifier.
func (s *Secrets) Subscribe(fn func()) (cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs == nil {
		s.subs = map[int]func(){}
	}
	id := s.next
	s.next++
	s.subs[id] = fn
	return func() {
		s.mu.Lock()
		delete(s.subs, id)
		s.mu.Unlock()
	}
}

// TLSCertificate implements SecretProvider.
func (s *Secrets) TLSCertificate(name string) (*tls.Certificate, error) {
	if set := s.set.Load(); set != nil {
		if c, ok := set.certs[name]; ok {
			return c, nil
		}
	}
	return nil, fmt.Errorf("tls_certificate secret %q: %w", name, ErrSecretNotFound)
}

// ValidationContext implements SecretProvider.
func (s *Secrets) ValidationContext(name string) (*tlsv3.CertificateValidationContext, error) {
	if set := s.set.Load(); set != nil {
		if v, ok := set.vcs[name]; ok {
			return v, nil
		}
	}
	return nil, fmt.Errorf("validation_context secret %q: %w", name, ErrSecretNotFound)
}

// readDataSource reads an Envoy DataSource; path names the field in errors.
func readDataSource(ds *corev3.DataSource, path string) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return b, nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, fmt.Errorf("%s: environment variable %s is not set", path, s.EnvironmentVariable)
		}
		return []byte(v), nil
	}
	return nil, fmt.Errorf("%s: data source is empty", path)
}

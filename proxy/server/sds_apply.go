package server

import (
	"net/http"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tlsctx "github.com/outrider-proxy/outrider/tls"
	"github.com/outrider-proxy/outrider/xds/client"
)

var secretType = client.SecretType

// onSecrets applies SDS: each delivered secret is compiled first; a bad one
// is rejected (named in the NACK, counted in sds.<name>.update_rejected) and
// its last good version stays; good ones are swapped in together and every
// TLS context recompiles, so new handshakes use them while established
// connections keep theirs.
func (d *dynamic) onSecrets(_ string, u client.Update) error {
	var errs []string
	changed := false
	for _, name := range u.Unchanged { // the bytes in force: counted and versioned, not recompiled
		d.sp.mu.Lock()
		if s := d.sp.sds[name]; s != nil && s.arrived {
			s.attempt.Inc()
			s.success.Inc()
			s.version, s.updated = u.Version, time.Now()
		}
		d.sp.mu.Unlock()
	}
	for _, name := range sortedKeys(u.Resources) {
		sec, ok := u.Resources[name].Msg.(*tlsv3.Secret)
		d.sp.mu.Lock()
		s := d.sp.sds[name]
		d.sp.mu.Unlock()
		if !ok || s == nil {
			continue // not subscribed (any more)
		}
		s.attempt.Inc()
		err := tlsctx.CheckSecret(sec)
		if err == nil {
			err = d.sp.dyn.Update(sec)
		}
		if err != nil {
			s.rejected.Inc()
			errs = append(errs, err.Error())
			continue
		}
		s.success.Inc()
		d.sp.mu.Lock()
		s.arrived, s.msg, s.version, s.updated = true, sec, versionOf(u, name), time.Now()
		d.sp.mu.Unlock()
		d.sp.markDone(s)
		changed = true
	}
	if u.InitialFetchTimeout {
		for _, name := range u.Missing {
			d.sp.mu.Lock()
			s := d.sp.sds[name]
			d.sp.mu.Unlock()
			if s != nil && !s.done {
				s.fetchTimeout.Inc()
				d.sp.markDone(s)
			}
		}
	}
	if changed {
		d.sp.notify()
	}
	d.checkWarming()
	return joinErrs(errs)
}

// redactSecret is sec with its private key and password replaced by
// "[redacted]" when inline, as Envoy's config dump shows secrets.
func redactSecret(sec *tlsv3.Secret) *tlsv3.Secret {
	sec = proto.Clone(sec).(*tlsv3.Secret)
	redact := func(ds *corev3.DataSource) {
		switch ds.GetSpecifier().(type) {
		case *corev3.DataSource_InlineBytes:
			ds.Specifier = &corev3.DataSource_InlineBytes{InlineBytes: []byte("[redacted]")}
		case *corev3.DataSource_InlineString:
			ds.Specifier = &corev3.DataSource_InlineString{InlineString: "[redacted]"}
		case *corev3.DataSource_EnvironmentVariable:
			// the value is not in the config
		}
	}
	if tc := sec.GetTlsCertificate(); tc != nil {
		redact(tc.GetPrivateKey())
		redact(tc.GetPassword())
	}
	if gs := sec.GetGenericSecret(); gs != nil {
		redact(gs.GetSecret())
	}
	for _, k := range sec.GetSessionTicketKeys().GetKeys() {
		redact(k)
	}
	return sec
}

// secretsDump is Envoy's SecretsConfigDump: static_resources.secrets, SDS
// secrets that arrived (active) and those still awaited (warming).
func (s *Server) secretsDump() *adminv3.SecretsConfigDump {
	out := &adminv3.SecretsConfigDump{}
	started := timestamppb.New(s.started)
	for _, sec := range s.opts.Bootstrap.GetStaticResources().GetSecrets() {
		a, _ := anypb.New(redactSecret(sec))
		out.StaticSecrets = append(out.StaticSecrets, &adminv3.SecretsConfigDump_StaticSecret{Name: sec.GetName(), LastUpdated: started, Secret: a})
	}
	p := s.secrets
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range sortedKeys(p.sds) {
		e := p.sds[name]
		ds := &adminv3.SecretsConfigDump_DynamicSecret{Name: name, VersionInfo: e.version}
		if e.msg != nil {
			ds.Secret, _ = anypb.New(redactSecret(e.msg))
			ds.LastUpdated = timestamppb.New(e.updated)
			out.DynamicActiveSecrets = append(out.DynamicActiveSecrets, ds)
		} else {
			out.DynamicWarmingSecrets = append(out.DynamicWarmingSecrets, ds)
		}
	}
	if p.wl != nil {
		// The Workload API's SVIDs and bundles, as SPIRE's SDS would show
		// them: dynamic secrets, under the names they are served by.
		secs, updated, version := p.wl.dump()
		for _, sec := range secs {
			if _, viaSDS := p.sds[sec.GetName()]; viaSDS {
				continue
			}
			a, _ := anypb.New(redactSecret(sec))
			out.DynamicActiveSecrets = append(out.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
				Name: sec.GetName(), VersionInfo: version, LastUpdated: timestamppb.New(updated), Secret: a})
		}
	}
	return out
}

// handleCerts is Envoy's /certs: every TLS context's trusted CA and
// certificate chain with SANs, serial, days until expiration and validity.
func (s *Server) handleCerts(w http.ResponseWriter, _ *http.Request) {
	out := &adminv3.Certificates{}
	now := time.Now()
	for _, c := range s.secrets.contexts() {
		out.Certificates = append(out.Certificates, c.CertificateDetails(now))
	}
	writeJSON(w, out)
}

// daysUntilFirstCertExpiring is server.days_until_first_cert_expiring: the
// fewest whole days until any certificate in use (chains and trusted CAs)
// expires; 0 when there is none (Envoy reports no value then).
func (s *Server) daysUntilFirstCertExpiring() int64 {
	var min uint64
	found := false
	now := time.Now()
	for _, c := range s.secrets.contexts() {
		cd := c.CertificateDetails(now)
		for _, d := range append(cd.GetCaCert(), cd.GetCertChain()...) {
			if !found || d.GetDaysUntilExpiration() < min {
				min, found = d.GetDaysUntilExpiration(), true
			}
		}
	}
	return int64(min)
}

package extauthz

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/runtime"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// Response code details of the filter's local replies.
const (
	detailsDenied = "ext_authz_denied"
	detailsError  = "ext_authz_error"
)

func (c *config) New(cb httpfilter.Callbacks) any { return &filter{cfg: c, cb: cb} }

// filter is one stream's check.
type filter struct {
	cfg *config
	cb  httpfilter.Callbacks

	h      *headers.Map      // the request headers being checked
	ext    map[string]string // context extensions of the route
	client checker           // the route's service, else the filter's
	// buffering: the check waits for the body, up to maxBytes
	// (allowPartial: then checks with what it has).
	buffering    bool
	maxBytes     int
	allowPartial bool
	// Response mutations of an OK answer, applied in EncodeHeaders.
	respAdd, respSet, respAddIfAbsent, respOverwriteIfExists []kv
}

// Reset lets the connection manager reuse the filter.
func (f *filter) Reset() { *f = filter{cfg: f.cfg, cb: f.cb} }

// enabled is filter_enabled for this request.
func (c *config) enabled() bool {
	if c.filterEnabled == nil {
		return true
	}
	return runtime.Process().FeatureEnabled(c.filterEnabled.GetRuntimeKey(), c.filterEnabled.GetDefaultValue(), rand.Uint64())
}

// denyDisabled is deny_at_disable.
func (c *config) denyDisabled() bool {
	if c.denyAtDisable == nil {
		return false
	}
	return runtime.Process().GetBool(c.denyAtDisable.GetRuntimeKey(), c.denyAtDisable.GetDefaultValue().GetValue())
}

// DecodeHeaders is Envoy's Filter::decodeHeaders: no route or a disabled
// route skips the check; with_request_body waits for the body first.
func (f *filter) DecodeHeaders(h *headers.Map, endStream bool) httpfilter.Status {
	r := f.cb.Route()
	if r == nil {
		return httpfilter.Continue
	}
	pr, ext := f.cfg.routeSettings(r)
	if pr != nil && pr.broken {
		f.cfg.stats.error.Inc()
		f.cb.SendLocalReply(f.cfg.statusOnError, "", detailsError, streaminfo.UnauthorizedExternalService)
		return httpfilter.Stop
	}
	if pr != nil && pr.disabled {
		return httpfilter.Continue
	}
	if !f.cfg.enabled() {
		f.cfg.stats.disabled.Inc()
		if f.cfg.denyDisabled() {
			f.cb.SendLocalReply(f.cfg.statusOnError, "", detailsError, streaminfo.UnauthorizedExternalService)
			return httpfilter.Stop
		}
		return httpfilter.Continue
	}
	f.h, f.ext, f.client = h, ext, f.cfg.client
	if pr != nil && pr.client != nil {
		f.client = pr.client
	}
	body := f.cfg.body
	routeBody := pr != nil && pr.body != nil
	if routeBody {
		body = *pr.body
	}
	f.buffering = (f.cfg.body.maxBytes > 0 || routeBody) && !(pr != nil && pr.disableBuffering) &&
		!endStream && !isUpgrade(h)
	if f.buffering {
		f.maxBytes, f.allowPartial = body.maxBytes, body.allowPartial
		return httpfilter.Stop
	}
	return f.call(nil, false, false)
}

// isUpgrade is Envoy's isWebSocketUpgradeRequest or isH2UpgradeRequest:
// their body is a tunnel, never buffered.
func isUpgrade(h *headers.Map) bool {
	if m, _ := h.Get(headers.Method); string(m) == "CONNECT" {
		if p, ok := h.Get(headers.Protocol); ok && string(p) != "bytestream" {
			return true
		}
	}
	up, _ := h.Get("upgrade")
	if !bytes.EqualFold(up, []byte("websocket")) {
		return false
	}
	conn, _ := h.Get("connection")
	for t := range strings.SplitSeq(string(conn), ",") {
		if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
			return true
		}
	}
	return false
}

// DecodeData buffers the body until it ends or, with allow_partial_message,
// reaches max_request_bytes; then the check runs. Without
// allow_partial_message a longer body is refused with 413, as Envoy's
// decoder buffer limit does.
func (f *filter) DecodeData(_ []byte, endStream bool) httpfilter.Status {
	if !f.buffering {
		return httpfilter.Continue
	}
	buf := *f.cb.DecodingBuffer()
	if !f.allowPartial && len(buf) > f.maxBytes {
		f.buffering = false
		f.cb.SendLocalReply(413, "Payload Too Large", "request_payload_too_large", 0)
		return httpfilter.Stop
	}
	if endStream || (f.allowPartial && len(buf) >= f.maxBytes) {
		return f.checkBuffered()
	}
	return httpfilter.StopAndBuffer
}

// DecodeTrailers ends a buffered body: the check runs.
func (f *filter) DecodeTrailers(*headers.Map) httpfilter.Status {
	if !f.buffering {
		return httpfilter.Continue
	}
	return f.checkBuffered()
}

func (f *filter) checkBuffered() httpfilter.Status {
	buf := *f.cb.DecodingBuffer()
	n := min(len(buf), f.maxBytes)
	return f.call(buf[:n:n], true, n != len(buf))
}

// call is Envoy's initiateCall and onComplete: it asks the service (the
// stream's goroutine waits for the answer) and acts on the answer.
func (f *filter) call(body []byte, withBody, partial bool) httpfilter.Status {
	f.buffering = false
	info := f.cb.Info()
	in := checkInput{info: info, headers: f.h, ext: f.ext, raw: f.cfg.body.packAsBytes, partial: partial}
	if withBody {
		in.body = body
		if in.body == nil {
			in.body = []byte{}
		}
	}
	req := f.cfg.buildCheck(&in)
	ctx := context.Background()
	if d := f.client.timeout(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	resp := f.client.check(ctx, req, &formatter.Context{Stream: info, Request: f.h})
	var cs *clusterStats
	if r := f.cb.Route(); r != nil {
		cs = f.cfg.clusterCounters(r.Cluster(f.h, 0))
	}
	switch resp.status {
	case statusOK:
		if f.cfg.validateMutations && !validOK(resp) {
			return f.reject(cs)
		}
		f.allow(resp)
		f.cfg.stats.ok.Inc()
		if cs != nil {
			cs.ok.Inc()
		}
		return httpfilter.Continue
	case statusDenied:
		f.cfg.stats.denied.Inc()
		if cs != nil {
			cs.denied.Inc()
			if f.cfg.chargeCluster && cs.cluster.Stats != nil {
				cs.cluster.Stats.RecordResponse(resp.statusCode)
			}
		}
		if f.cfg.validateMutations && !validHeaders(resp.headersToSet) {
			return f.reject(cs)
		}
		b := resp.body
		if m := f.cfg.maxDeniedBody; m > 0 && len(b) > m {
			b = b[:m]
		}
		for _, e := range resp.headersToSet {
			if e.k != "" && e.k[0] != ':' {
				f.cb.AddLocalReplyHeader(strings.ToLower(e.k), e.v)
			}
		}
		f.cb.SendLocalReply(resp.statusCode, b, detailsDenied, streaminfo.UnauthorizedExternalService)
		return httpfilter.Stop
	}
	f.cfg.stats.error.Inc()
	if cs != nil {
		cs.error.Inc()
	}
	if f.cfg.failureModeAllow {
		f.cfg.stats.failureModeAllowed.Inc()
		if cs != nil {
			cs.failureModeAllowed.Inc()
		}
		if f.cfg.failureModeAllowHeaderAdd {
			f.h.Add(failureModeHeader, "true")
		}
		return httpfilter.Continue
	}
	f.cb.SendLocalReply(f.cfg.statusOnError, "", detailsError, streaminfo.UnauthorizedExternalService)
	return httpfilter.Stop
}

// reject is Envoy's rejectResponse: the answer's mutations are malformed.
func (f *filter) reject(cs *clusterStats) httpfilter.Status {
	f.cfg.stats.invalid.Inc()
	if cs != nil {
		cs.invalid.Inc()
	}
	f.cb.SendLocalReply(500, "", detailsInvalid, streaminfo.UnauthorizedExternalService)
	return httpfilter.Stop
}

// allow applies an OK answer's request mutations and keeps its response
// mutations for EncodeHeaders.
func (f *filter) allow(r *response) {
	h := f.h
	if f.cfg.clearRouteCache && f.mutatesRoute(r) {
		f.cb.ClearRouteCache()
	}
	for _, e := range r.headersToSet {
		h.Set(strings.ToLower(e.k), e.v)
	}
	for _, e := range r.headersToAdd {
		h.Add(strings.ToLower(e.k), e.v)
	}
	for _, e := range r.headersToAppend {
		name := strings.ToLower(e.k)
		if old, ok := h.Get(name); ok {
			h.Set(name, string(old)+","+e.v)
		}
	}
	for _, name := range r.headersToRemove {
		if f.cfg.validateMutations && !validName(name) {
			continue
		}
		name = strings.ToLower(name)
		// Pseudo-headers and host cannot be removed: the request would be
		// malformed.
		if name == "" || name[0] == ':' || name == "host" {
			continue
		}
		h.Del(name)
	}
	if len(r.querySet) > 0 || len(r.queryRemove) > 0 {
		p, _ := h.Get(headers.Path)
		h.Set(headers.Path, rewriteQuery(string(p), r.querySet, r.queryRemove))
	}
	f.respAdd, f.respSet = r.respAdd, r.respSet
	f.respAddIfAbsent, f.respOverwriteIfExists = r.respAddIfAbsent, r.respOverwriteIfExists
}

// mutatesRoute tells whether an OK answer changes what routes match on:
// any set, appended or removed header or query parameter, or only those
// of clear_route_cache_headers when it is set.
func (f *filter) mutatesRoute(r *response) bool {
	if len(r.querySet) > 0 || len(r.queryRemove) > 0 {
		return true
	}
	names := f.cfg.clearRouteCacheHeaders
	if len(names) == 0 {
		return len(r.headersToSet) > 0 || len(r.headersToAppend) > 0 || len(r.headersToRemove) > 0
	}
	in := func(n string) bool {
		return slices.ContainsFunc(names, func(s string) bool { return strings.EqualFold(s, n) })
	}
	for _, l := range [][]kv{r.headersToSet, r.headersToAppend} {
		for _, e := range l {
			if in(e.k) {
				return true
			}
		}
	}
	return slices.ContainsFunc(r.headersToRemove, in)
}

// rewriteQuery is Envoy's QueryParamsMulti overwrite/remove and
// replaceQueryString: the parameters come out sorted by name.
func rewriteQuery(path string, set []kv, remove []string) string {
	base, query, _ := strings.Cut(path, "?")
	params := map[string][]string{}
	for p := range strings.SplitSeq(query, "&") {
		if p == "" {
			continue
		}
		k, v, _ := strings.Cut(p, "=")
		params[k] = append(params[k], v)
	}
	for _, e := range set {
		params[e.k] = []string{e.v}
	}
	for _, k := range remove {
		delete(params, k)
	}
	if len(params) == 0 {
		return base
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(base)
	sep := byte('?')
	for _, k := range keys {
		for _, v := range params[k] {
			b.WriteByte(sep)
			b.WriteString(k)
			b.WriteByte('=')
			b.WriteString(v)
			sep = '&'
		}
	}
	return b.String()
}

// EncodeHeaders applies an OK answer's response_headers_to_add.
func (f *filter) EncodeHeaders(h *headers.Map, _ bool) httpfilter.Status {
	for _, e := range f.respAdd {
		h.Add(strings.ToLower(e.k), e.v)
	}
	for _, e := range f.respSet {
		h.Set(strings.ToLower(e.k), e.v)
	}
	for _, e := range f.respAddIfAbsent {
		if n := strings.ToLower(e.k); !h.Has(n) {
			h.Add(n, e.v)
		}
	}
	for _, e := range f.respOverwriteIfExists {
		if n := strings.ToLower(e.k); h.Has(n) {
			h.Set(n, e.v)
		}
	}
	return httpfilter.Continue
}

func (f *filter) EncodeData([]byte, bool) httpfilter.Status     { return httpfilter.Continue }
func (f *filter) EncodeTrailers(*headers.Map) httpfilter.Status { return httpfilter.Continue }

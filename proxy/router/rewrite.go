package router

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// rewritePath returns the request path after prefix_rewrite or
// regex_rewrite, and false when neither applies. For prefix_rewrite the
// matched part (the route's prefix or path, or for a regex route the whole
// path) is replaced; regex_rewrite rewrites the path without its query, which
// is kept.
func rewritePath(path []byte, m *routeMatch, prefix string, rr *regexRewrite) ([]byte, bool) {
	switch {
	case prefix != "":
		n := len(m.value)
		if m.kind == pathRegex || m.kind == pathConnect {
			n = len(stripQuery(path))
		}
		if n > len(path) {
			n = len(path)
		}
		out := make([]byte, 0, len(prefix)+len(path)-n)
		out = append(out, prefix...)
		return append(out, path[n:]...), true
	case rr != nil:
		p := stripQuery(path)
		out := rr.replaceAll(p)
		return append(out, path[len(p):]...), true
	}
	return nil, false
}

// RewriteRequest applies the route's host rewrite (host_rewrite_literal,
// host_rewrite_header, host_rewrite_path_regex; with append_x_forwarded_host
// the original host is appended to x-forwarded-host) and then its path
// rewrite (prefix_rewrite or regex_rewrite). auto_host_rewrite is left to the
// caller, which knows the endpoint. x-envoy-original-path is not set.
func (r *Route) RewriteRequest(req *headers.Map) {
	rw := r.rewrite
	if r.kind != ActionCluster || rw == nil {
		return
	}
	var newHost []byte
	switch {
	case rw.hostLiteral != "":
		newHost = []byte(rw.hostLiteral)
	case rw.hostHeader != "":
		if v, ok := req.Get(rw.hostHeader); ok && len(v) > 0 {
			newHost = v
		}
	case rw.hostPathRegex != nil:
		p, _ := req.Get(headers.Path)
		newHost = rw.hostPathRegex.replaceAll(stripQuery(p))
	}
	if newHost != nil {
		if rw.appendXFH {
			if orig, ok := req.Get(headers.Authority); ok && len(orig) > 0 {
				appendXForwardedHost(req, orig)
			}
		}
		req.SetBytes(headers.Authority, newHost)
	}
	if p, ok := req.Get(headers.Path); ok {
		if np, ok := rewritePath(p, &r.match, rw.prefixRewrite, rw.regexRewrite); ok {
			req.SetBytes(headers.Path, np)
		}
	}
}

func appendXForwardedHost(req *headers.Map, host []byte) {
	const xfh = "x-forwarded-host"
	host = bytes.Clone(host)
	if cur, ok := req.Get(xfh); ok && len(cur) > 0 {
		v := make([]byte, 0, len(cur)+1+len(host))
		v = append(append(append(v, cur...), ','), host...)
		req.SetBytes(xfh, v)
		return
	}
	req.SetBytes(xfh, host)
}

// redirect is a compiled RedirectAction.
type redirect struct {
	sslRedirect   bool // require_tls: https://host/path, nothing else
	scheme        string
	host          string
	port          string // ":8080" or ""
	path          string
	pathHasQuery  bool
	prefixRewrite string
	regexRewrite  *regexRewrite
	stripQuery    bool
	status        int
	match         *routeMatch
}

func compileRedirect(c *routev3.RedirectAction, m routeMatch) (*redirect, error) {
	rd := &redirect{host: c.GetHostRedirect(), stripQuery: c.GetStripQuery(), match: &m}
	switch s := c.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			rd.scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		rd.scheme = strings.ToLower(s.SchemeRedirect)
	}
	if p := c.GetPortRedirect(); p != 0 {
		if p > 65535 {
			return nil, fmt.Errorf("redirect.port_redirect: %d out of range", p)
		}
		rd.port = ":" + strconv.Itoa(int(p))
	}
	switch p := c.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		rd.path = p.PathRedirect
		rd.pathHasQuery = strings.Contains(p.PathRedirect, "?")
	case *routev3.RedirectAction_PrefixRewrite:
		rd.prefixRewrite = p.PrefixRewrite
	case *routev3.RedirectAction_RegexRewrite:
		rr, err := newRegexRewrite(p.RegexRewrite.GetPattern().GetRegex(), p.RegexRewrite.GetSubstitution())
		if err != nil {
			return nil, fmt.Errorf("redirect.regex_rewrite: %w", err)
		}
		rd.regexRewrite = rr
	case *routev3.RedirectAction_PathRewrite:
		return nil, errors.New("redirect.path_rewrite: not supported")
	}
	switch c.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		rd.status = 301
	case routev3.RedirectAction_FOUND:
		rd.status = 302
	case routev3.RedirectAction_SEE_OTHER:
		rd.status = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		rd.status = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		rd.status = 308
	default:
		return nil, fmt.Errorf("redirect.response_code: unknown value %v", c.GetResponseCode())
	}
	return rd, nil
}

// Redirect computes the status and Location of a redirect route for req,
// following Envoy's Http::Utility::newUri. ok-less: a non-redirect route
// returns (0, "").
func (r *Route) Redirect(req *headers.Map) (status int, location string) {
	rd := r.redirect
	if rd == nil {
		return 0, ""
	}
	host, _ := req.Get(headers.Authority)
	path, _ := req.Get(headers.Path)
	if rd.sslRedirect {
		return rd.status, "https://" + string(host) + string(path)
	}
	xfp, ok := req.Get("x-forwarded-proto")
	if !ok {
		xfp, _ = req.Get(headers.Scheme)
	}
	scheme := rd.scheme
	if scheme == "" {
		scheme = string(xfp)
	}
	finalHost := processRequestHost(host, xfp, scheme, rd.port)
	if rd.host != "" {
		finalHost = []byte(rd.host)
	}
	var finalPath []byte
	switch {
	case rd.path != "":
		finalPath = []byte(rd.path)
		if !rd.pathHasQuery {
			if i := bytes.IndexByte(path, '?'); i >= 0 {
				finalPath = append(finalPath, path[i:]...)
			}
		}
	case rd.prefixRewrite != "" || rd.regexRewrite != nil:
		finalPath, _ = rewritePath(path, rd.match, rd.prefixRewrite, rd.regexRewrite)
	default:
		finalPath = path
	}
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString("://")
	b.Write(finalHost)
	b.WriteString(rd.port)
	if len(finalPath) == 0 || finalPath[0] != '/' {
		b.WriteByte('/')
	}
	if !rd.pathHasQuery && rd.stripQuery {
		if i := bytes.IndexByte(finalPath, '?'); i >= 0 {
			finalPath = finalPath[:i]
		}
	}
	b.Write(finalPath)
	return rd.status, b.String()
}

// processRequestHost drops the request's port when a new port is set, or when
// the scheme changes and the port is the default one of the original scheme.
func processRequestHost(host, reqProto []byte, newScheme, newPort string) []byte {
	if len(host) == 0 {
		return host
	}
	var end int
	if host[0] == '[' {
		end = bytes.LastIndex(host, []byte("]:"))
		if end >= 0 {
			end++
		}
	} else {
		end = bytes.LastIndexByte(host, ':')
	}
	if end < 0 {
		return host
	}
	port := string(host[end:])
	remove := newPort != ""
	if newScheme != string(reqProto) {
		remove = remove || (string(reqProto) == "https" && port == ":443")
		remove = remove || (string(reqProto) == "http" && port == ":80")
	}
	if remove {
		return host[:end]
	}
	return host
}

// weightedClusters is a compiled WeightedCluster.
type weightedClusters struct {
	names      []string
	headers    []string // cluster_header per entry ("" = use name)
	weights    []uint64
	total      uint64
	headerName string // random_value_specifier header_name
}

func compileWeighted(w *routev3.WeightedCluster, cc *compileCtx) (*weightedClusters, error) {
	if w.GetUseHashPolicy() != nil && w.GetUseHashPolicy().GetValue() {
		return nil, errors.New(".use_hash_policy: not supported")
	}
	if len(w.GetClusters()) == 0 {
		return nil, errors.New(".clusters: at least one cluster is required")
	}
	out := &weightedClusters{headerName: strings.ToLower(w.GetHeaderName())}
	for i, c := range w.GetClusters() {
		where := fmt.Sprintf(".clusters[%d]", i)
		switch {
		case len(c.GetRequestHeadersToAdd())+len(c.GetRequestHeadersToRemove())+len(c.GetResponseHeadersToAdd())+len(c.GetResponseHeadersToRemove()) > 0:
			return nil, errors.New(where + ": per-cluster header mutations are not supported")
		case len(c.GetTypedPerFilterConfig()) > 0:
			return nil, errors.New(where + ".typed_per_filter_config: not supported")
		case c.GetHostRewriteSpecifier() != nil:
			return nil, errors.New(where + ".host_rewrite_literal: not supported")
		case c.GetMetadataMatch() != nil:
			return nil, errors.New(where + ".metadata_match: not supported")
		}
		if c.GetName() == "" && c.GetClusterHeader() == "" {
			return nil, errors.New(where + ": name or cluster_header is required")
		}
		if c.GetName() != "" && cc.validate != nil && !cc.validate(c.GetName()) {
			return nil, fmt.Errorf("%s.name: route: unknown weighted cluster '%s'", where, c.GetName())
		}
		wt := uint64(c.GetWeight().GetValue())
		out.names = append(out.names, c.GetName())
		out.headers = append(out.headers, strings.ToLower(c.GetClusterHeader()))
		out.weights = append(out.weights, wt)
		out.total += wt
		if out.total > 1<<32-1 {
			return nil, errors.New(": the sum of weights of all weighted clusters exceeds 4294967295")
		}
	}
	if out.total == 0 {
		return nil, errors.New(": sum of weights in the weighted_cluster must be greater than 0")
	}
	return out, nil
}

// pick selects the entry whose cumulative weight range holds rnd % total.
func (w *weightedClusters) pick(req *headers.Map, rnd uint64) string {
	if w.headerName != "" {
		if v, ok := req.Get(w.headerName); ok {
			if x, err := strconv.ParseUint(string(v), 10, 64); err == nil {
				rnd = x
			}
		}
	}
	sel := rnd % w.total
	var end uint64
	for i, wt := range w.weights {
		end += wt
		if sel < end {
			if h := w.headers[i]; h != "" {
				v, _ := req.Get(h)
				return string(v)
			}
			return w.names[i]
		}
	}
	return w.names[len(w.names)-1]
}

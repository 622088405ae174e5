// Package compressor is Envoy's compressor HTTP filter
// (envoy.filters.http.compressor): it compresses response bodies (and, when
// request_direction_config is set, request bodies) piece by piece with a
// compressor library, deciding from Accept-Encoding q-values, content type,
// length, ETag and Cache-Control as Envoy's CompressorFilter does. Libraries
// (gzip, brotli, zstd, in sub-packages) register in Libraries; stats are
// <stat_prefix>compressor.<library name>.<library prefix>[request.|response.]*.
package compressor

import (
	"errors"
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	compv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/matcher"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name; typed_per_filter_config is looked up
// under it.
const Name = "envoy.filters.http.compressor"

func init() {
	httpfilter.Registry.Register(Name, []string{"envoy.extensions.filters.http.compressor.v3.Compressor"},
		httpfilter.Factory{Create: create})
}

// defaultContentTypes is Envoy's list when content_type is empty.
var defaultContentTypes = []string{
	"text/html", "text/plain", "text/css", "application/javascript", "application/x-javascript",
	"text/javascript", "text/x-javascript", "text/ecmascript", "text/js", "text/jscript", "text/x-js",
	"application/ecmascript", "application/x-json", "application/xml", "application/json",
	"image/svg+xml", "text/xml", "application/xhtml+xml", "application/grpc-web", "application/grpc-web+proto",
}

// direction is one direction's common_config and its stats.
type direction struct {
	// enabled is the runtime feature flag; nil means on.
	enabled *corev3.RuntimeFeatureFlag
	minLen  uint64
	// types are the allowed content types, lower-case; matchers replace them
	// when content_type_matcher is set.
	types    map[string]struct{}
	matchers []*matcher.String

	compressed, notCompressed, totalUncompressed, totalCompressed, tooSmall *stats.Counter
}

func compileDirection(c *compv3.Compressor_CommonDirectionConfig, path, prefix string, store *stats.Store) (*direction, error) {
	if err := confcheck.Fields(c, path, "enabled", "min_content_length", "content_type", "content_type_matcher"); err != nil {
		return nil, err
	}
	d := &direction{enabled: c.GetEnabled(), minLen: 30}
	if v := c.GetMinContentLength().GetValue(); v > 0 {
		d.minLen = uint64(v)
	}
	for i, m := range c.GetContentTypeMatcher() {
		sm, err := matcher.CompileString(m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", confcheck.Join(path, fmt.Sprintf("content_type_matcher[%d]", i)), err)
		}
		d.matchers = append(d.matchers, sm)
	}
	if len(d.matchers) == 0 {
		types := c.GetContentType()
		if len(types) == 0 {
			types = defaultContentTypes
		}
		d.types = make(map[string]struct{}, len(types))
		for _, t := range types {
			d.types[strings.ToLower(t)] = struct{}{}
		}
	}
	d.compressed = store.Counter(prefix + "compressed")
	d.notCompressed = store.Counter(prefix + "not_compressed")
	d.totalUncompressed = store.Counter(prefix + "total_uncompressed_bytes")
	d.totalCompressed = store.Counter(prefix + "total_compressed_bytes")
	d.tooSmall = store.Counter(prefix + "content_length_too_small")
	return d, nil
}

// on is the enabled flag: Envoy's Runtime::FeatureFlag.
func (d *direction) on() bool { return coding.Enabled(d.enabled) }

// typeAllowed reports whether a content-type value (without parameters)
// is in the list or matches a content_type_matcher.
func (d *direction) typeAllowed(ct string) bool {
	if len(d.matchers) > 0 {
		for _, m := range d.matchers {
			if m.MatchString(ct) {
				return true
			}
		}
		return false
	}
	_, ok := d.types[strings.ToLower(ct)]
	return ok
}

// config is the compiled filter, shared by every stream of the chain.
type config struct {
	lib      Library
	encoding string
	// reqSet is whether request_direction_config is set (request
	// compression is off otherwise).
	reqSet    bool
	req, resp *direction
	// Response-only settings.
	disableOnEtag, weakenEtag, removeAcceptEncoding, chooseFirst bool
	uncompressible                                               map[int]bool

	noAcceptHeader, headerIdentity, headerUsed, headerOvershadowed, headerWildcard,
	headerNotValid, notCompressedEtag *stats.Counter

	// routes caches compiled per-route configs by their Any.
	routes httpfilter.PerRoute[*anypb.Any, *perRoute]
}

var supported = []string{
	"content_length", "content_type", "disable_on_etag_header", "remove_accept_encoding_header",
	"runtime_enabled", "compressor_library", "request_direction_config", "response_direction_config", "choose_first",
}

func create(ctx *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
	m := &compv3.Compressor{}
	if err := httpfilter.UnmarshalConfig(a, m); err != nil {
		return nil, err
	}
	if err := confcheck.Fields(m, "", supported...); err != nil {
		return nil, err
	}
	store := ctx.StatsStore()
	libCfg := m.GetCompressorLibrary()
	if libCfg == nil {
		return nil, errors.New("compressor_library: required")
	}
	lf, err := Libraries.Lookup(libCfg.GetName(), libCfg.GetTypedConfig().GetTypeUrl())
	if err != nil {
		return nil, fmt.Errorf("compressor_library: %w", err)
	}
	lib, err := lf(libCfg.GetTypedConfig())
	if err != nil {
		return nil, fmt.Errorf("compressor_library (%s): %w", libCfg.GetName(), err)
	}
	prefix := ctx.StatPrefix + "compressor." + libCfg.GetName() + "." + lib.StatsPrefix()
	c := &config{lib: lib, encoding: lib.Encoding(), chooseFirst: m.GetChooseFirst(), reqSet: m.GetRequestDirectionConfig() != nil}

	if rq := m.GetRequestDirectionConfig(); rq != nil {
		if err := confcheck.Fields(rq, "request_direction_config", "common_config"); err != nil {
			return nil, err
		}
	}
	if c.req, err = compileDirection(m.GetRequestDirectionConfig().GetCommonConfig(),
		"request_direction_config.common_config", prefix+"request.", store); err != nil {
		return nil, err
	}

	respPrefix := prefix
	if rd := m.GetResponseDirectionConfig(); rd != nil {
		if err := confcheck.Fields(rd, "response_direction_config", "common_config", "disable_on_etag_header",
			"weaken_etag_on_compress", "remove_accept_encoding_header", "uncompressible_response_codes"); err != nil {
			return nil, err
		}
		respPrefix = prefix + "response."
		if c.resp, err = compileDirection(rd.GetCommonConfig(), "response_direction_config.common_config", respPrefix, store); err != nil {
			return nil, err
		}
		c.disableOnEtag, c.weakenEtag = rd.GetDisableOnEtagHeader(), rd.GetWeakenEtagOnCompress()
		c.removeAcceptEncoding = rd.GetRemoveAcceptEncodingHeader()
		for i, code := range rd.GetUncompressibleResponseCodes() {
			if code < 100 || code > 599 {
				return nil, fmt.Errorf("response_direction_config.uncompressible_response_codes[%d]: %d is not an HTTP status", i, code)
			}
			if c.uncompressible == nil {
				c.uncompressible = map[int]bool{}
			}
			c.uncompressible[int(code)] = true
		}
	} else {
		// The deprecated top-level fields, as Envoy's commonConfig().
		legacy := &compv3.Compressor_CommonDirectionConfig{MinContentLength: m.GetContentLength(),
			ContentType: m.GetContentType(), Enabled: m.GetRuntimeEnabled()}
		if c.resp, err = compileDirection(legacy, "", respPrefix, store); err != nil {
			return nil, err
		}
		c.disableOnEtag, c.removeAcceptEncoding = m.GetDisableOnEtagHeader(), m.GetRemoveAcceptEncodingHeader()
	}
	// The response-only stats stay at the library prefix either way.
	c.noAcceptHeader = store.Counter(prefix + "no_accept_header")
	c.headerIdentity = store.Counter(prefix + "header_identity")
	c.headerUsed = store.Counter(prefix + "header_compressor_used")
	c.headerOvershadowed = store.Counter(prefix + "header_compressor_overshadowed")
	c.headerWildcard = store.Counter(prefix + "header_wildcard")
	c.headerNotValid = store.Counter(prefix + "header_not_valid")
	c.notCompressedEtag = store.Counter(prefix + "not_compressed_etag")
	return c, nil
}

// perRoute is a compiled CompressorPerRoute: each field nil when the route
// leaves it to the filter.
type perRoute struct {
	respEnabled, removeAcceptEncoding *bool
}

func compilePerRoute(a *anypb.Any) (*perRoute, error) {
	m := &compv3.CompressorPerRoute{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, err
	}
	p := &perRoute{}
	switch o := m.GetOverride().(type) {
	case *compv3.CompressorPerRoute_Disabled:
		off := false
		p.respEnabled = &off
	case *compv3.CompressorPerRoute_Overrides:
		if err := confcheck.Fields(o.Overrides, "overrides", "response_direction_config"); err != nil {
			return nil, err
		}
		if rd := o.Overrides.GetResponseDirectionConfig(); rd != nil {
			on := true
			p.respEnabled = &on
			if v := rd.GetRemoveAcceptEncodingHeader(); v != nil {
				b := v.GetValue()
				p.removeAcceptEncoding = &b
			}
		}
	default:
		return nil, errors.New("override: one of disabled or overrides is required")
	}
	return p, nil
}

// brokenRoute stands for a per-route config that does not compile: response
// compression off for the route.
var brokenRoute = func() *perRoute { off := false; return &perRoute{respEnabled: &off} }()

func (c *config) perRoute(a *anypb.Any) *perRoute {
	return c.routes.Get(a, compilePerRoute, brokenRoute)
}

func (c *config) New(cb httpfilter.Callbacks) any { return &filter{cfg: c, cb: cb} }

// Package decompressor is Envoy's decompressor HTTP filter
// (envoy.filters.http.decompressor): it decompresses request and response
// bodies whose first content-coding is its library's, piece by piece, and
// advertises the coding in the request's Accept-Encoding, as Envoy's
// DecompressorFilter does. Libraries (gzip, brotli, zstd, in sub-packages)
// register in Libraries; stats are
// <stat_prefix>decompressor.<library name>.<library prefix>[request|response].*.
package decompressor

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	decv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/decompressor/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name.
const Name = "envoy.filters.http.decompressor"

func init() {
	httpfilter.Registry.Register(Name, []string{"envoy.extensions.filters.http.decompressor.v3.Decompressor"},
		httpfilter.Factory{Create: create})
}

// direction is one direction's common_config and its stats.
type direction struct {
	// enabled is the runtime feature flag; nil means on.
	enabled           *corev3.RuntimeFeatureFlag
	ignoreNoTransform bool

	decompressed, notDecompressed, totalUncompressed, totalCompressed *stats.Counter
}

func compileDirection(c *decv3.Decompressor_CommonDirectionConfig, path, prefix string, store *stats.Store) (*direction, error) {
	if c != nil {
		if err := confcheck.Fields(c, path, "enabled", "ignore_no_transform_header"); err != nil {
			return nil, err
		}
	}
	return &direction{
		enabled:           c.GetEnabled(),
		ignoreNoTransform: c.GetIgnoreNoTransformHeader(),
		decompressed:      store.Counter(prefix + "decompressed"),
		notDecompressed:   store.Counter(prefix + "not_decompressed"),
		totalUncompressed: store.Counter(prefix + "total_uncompressed_bytes"),
		totalCompressed:   store.Counter(prefix + "total_compressed_bytes"),
	}, nil
}

// on is the enabled flag: Envoy's Runtime::FeatureFlag (default true).
func (d *direction) on() bool { return coding.Enabled(d.enabled) }

// config is the compiled filter, shared by every stream of the chain.
type config struct {
	lib      Library
	encoding string
	req      *direction
	resp     *direction
	// advertise is request_direction_config.advertise_accept_encoding
	// (default true).
	advertise bool
}

func create(ctx *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
	m := &decv3.Decompressor{}
	if err := httpfilter.UnmarshalConfig(a, m); err != nil {
		return nil, err
	}
	if err := confcheck.Fields(m, "", "decompressor_library", "request_direction_config", "response_direction_config"); err != nil {
		return nil, err
	}
	store := ctx.StatsStore()
	libCfg := m.GetDecompressorLibrary()
	if libCfg == nil {
		return nil, errors.New("decompressor_library: required")
	}
	if libCfg.GetName() == "" {
		return nil, errors.New("decompressor_library.name: required")
	}
	lf, err := Libraries.Lookup(libCfg.GetName(), libCfg.GetTypedConfig().GetTypeUrl())
	if err != nil {
		return nil, fmt.Errorf("decompressor_library: %w", err)
	}
	filterPrefix := ctx.StatPrefix + "decompressor." + libCfg.GetName() + "."
	lib, err := lf(libCfg.GetTypedConfig(), Scope{Store: store, Prefix: filterPrefix})
	if err != nil {
		return nil, fmt.Errorf("decompressor_library (%s): %w", libCfg.GetName(), err)
	}
	prefix := filterPrefix + lib.StatsPrefix()
	c := &config{lib: lib, encoding: lib.Encoding(), advertise: true}
	if rq := m.GetRequestDirectionConfig(); rq != nil {
		if err := confcheck.Fields(rq, "request_direction_config", "common_config", "advertise_accept_encoding"); err != nil {
			return nil, err
		}
		if v := rq.GetAdvertiseAcceptEncoding(); v != nil {
			c.advertise = v.GetValue()
		}
	}
	if rd := m.GetResponseDirectionConfig(); rd != nil {
		if err := confcheck.Fields(rd, "response_direction_config", "common_config"); err != nil {
			return nil, err
		}
	}
	if c.req, err = compileDirection(m.GetRequestDirectionConfig().GetCommonConfig(),
		"request_direction_config.common_config", prefix+"request.", store); err != nil {
		return nil, err
	}
	if c.resp, err = compileDirection(m.GetResponseDirectionConfig().GetCommonConfig(),
		"response_direction_config.common_config", prefix+"response.", store); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *config) New(cb httpfilter.Callbacks) any { return &filter{cfg: c, cb: cb} }

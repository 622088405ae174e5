package accesslog

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/outrider-proxy/outrider/proxy/grpcstatus"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/matcher"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// filter decides whether one entry is logged. Implementations are immutable.
type filter interface {
	evaluate(ctx *formatter.Context) bool
}

// compileFilter builds an AccessLogFilter. Errors start with the filter's
// field name ("status_code_filter.comparison: ...").
func compileFilter(f *accesslogv3.AccessLogFilter) (filter, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("invalid filter: %w", err)
	}
	switch s := f.GetFilterSpecifier().(type) {
	case *accesslogv3.AccessLogFilter_StatusCodeFilter:
		c, err := compileComparison(s.StatusCodeFilter.GetComparison())
		if err != nil {
			return nil, fmt.Errorf("status_code_filter.comparison.%w", err)
		}
		return statusCodeFilter{c}, nil
	case *accesslogv3.AccessLogFilter_DurationFilter:
		c, err := compileComparison(s.DurationFilter.GetComparison())
		if err != nil {
			return nil, fmt.Errorf("duration_filter.comparison.%w", err)
		}
		return durationFilter{c}, nil
	case *accesslogv3.AccessLogFilter_NotHealthCheckFilter:
		return notHealthCheckFilter{}, nil
	case *accesslogv3.AccessLogFilter_TraceableFilter:
		return traceableFilter{}, nil
	case *accesslogv3.AccessLogFilter_RuntimeFilter:
		return compileRuntimeFilter(s.RuntimeFilter)
	case *accesslogv3.AccessLogFilter_AndFilter:
		fs, err := compileFilters(s.AndFilter.GetFilters(), "and_filter")
		return andFilter(fs), err
	case *accesslogv3.AccessLogFilter_OrFilter:
		fs, err := compileFilters(s.OrFilter.GetFilters(), "or_filter")
		return orFilter(fs), err
	case *accesslogv3.AccessLogFilter_HeaderFilter:
		if s.HeaderFilter.GetHeader() == nil {
			return nil, errors.New("header_filter.header: required")
		}
		m, err := matcher.CompileHeader(s.HeaderFilter.GetHeader())
		if err != nil {
			return nil, fmt.Errorf("header_filter.header.%w", err)
		}
		return headerFilter{m}, nil
	case *accesslogv3.AccessLogFilter_ResponseFlagFilter:
		return compileResponseFlagFilter(s.ResponseFlagFilter)
	case *accesslogv3.AccessLogFilter_GrpcStatusFilter:
		g := grpcStatusFilter{exclude: s.GrpcStatusFilter.GetExclude()}
		for _, st := range s.GrpcStatusFilter.GetStatuses() {
			g.statuses |= 1 << uint(st)
		}
		return g, nil
	case *accesslogv3.AccessLogFilter_LogTypeFilter:
		l := logTypeFilter{exclude: s.LogTypeFilter.GetExclude()}
		for _, t := range s.LogTypeFilter.GetTypes() {
			l.types |= 1 << uint(t)
		}
		return l, nil
	case *accesslogv3.AccessLogFilter_MetadataFilter:
		return nil, errors.New("metadata_filter: not supported")
	case *accesslogv3.AccessLogFilter_ExtensionFilter:
		return nil, fmt.Errorf("extension_filter: unsupported access log filter %q", s.ExtensionFilter.GetName())
	}
	return nil, errors.New("filter_specifier: required")
}

func compileFilters(in []*accesslogv3.AccessLogFilter, field string) ([]filter, error) {
	out := make([]filter, 0, len(in))
	for i, f := range in {
		c, err := compileFilter(f)
		if err != nil {
			return nil, fmt.Errorf("%s.filters[%d].%w", field, i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// comparison is a ComparisonFilter. Without a runtime, the value is always
// the RuntimeUInt32 default_value.
type comparison struct {
	op    accesslogv3.ComparisonFilter_Op
	value uint64
}

func compileComparison(c *accesslogv3.ComparisonFilter) (comparison, error) {
	if c == nil {
		return comparison{}, errors.New("required")
	}
	if c.GetValue() == nil {
		return comparison{}, errors.New("value: required")
	}
	return comparison{op: c.GetOp(), value: uint64(c.GetValue().GetDefaultValue())}, nil
}

func (c comparison) compare(lhs uint64) bool {
	switch c.op {
	case accesslogv3.ComparisonFilter_GE:
		return lhs >= c.value
	case accesslogv3.ComparisonFilter_LE:
		return lhs <= c.value
	case accesslogv3.ComparisonFilter_NE:
		return lhs != c.value
	}
	return lhs == c.value
}

// statusCodeFilter compares the response code; a stream without one
// compares as 0.
type statusCodeFilter struct{ c comparison }

func (f statusCodeFilter) evaluate(ctx *formatter.Context) bool {
	code := 0
	if ctx.Stream != nil {
		code = ctx.Stream.ResponseCode
	}
	return f.c.compare(uint64(code))
}

// durationFilter compares the total duration in milliseconds: until the last
// downstream byte sent, or until now for a stream still in progress. Without
// a start time there is no duration and the filter fails.
type durationFilter struct{ c comparison }

func (f durationFilter) evaluate(ctx *formatter.Context) bool {
	s := ctx.Stream
	if s == nil {
		return false
	}
	d := s.LastDownstreamTxByte
	if d <= 0 {
		if s.StartTime.IsZero() {
			return false
		}
		d = time.Since(s.StartTime)
	}
	return f.c.compare(uint64(d.Milliseconds()))
}

// notHealthCheckFilter passes requests that were not answered as health
// checks. Nothing in outrider marks a stream as a health check yet (Envoy's
// health_check filter does), so it always passes.
type notHealthCheckFilter struct{}

func (notHealthCheckFilter) evaluate(*formatter.Context) bool { return true }

// traceableFilter passes traced requests; outrider does not trace, so none.
type traceableFilter struct{}

func (traceableFilter) evaluate(*formatter.Context) bool { return false }

// runtimeFilter samples a percentage: by the x-request-id (its first 8 hex
// digits, so all logs of one request agree) unless
// use_independent_randomness, else at random. Without a runtime the
// percentage is percent_sampled (default 0%).
type runtimeFilter struct {
	numerator, denominator uint64
	independent            bool
}

func compileRuntimeFilter(r *accesslogv3.RuntimeFilter) (filter, error) {
	f := runtimeFilter{denominator: 100, independent: r.GetUseIndependentRandomness()}
	if p := r.GetPercentSampled(); p != nil {
		f.numerator = uint64(p.GetNumerator())
		switch p.GetDenominator() {
		case typev3.FractionalPercent_TEN_THOUSAND:
			f.denominator = 10000
		case typev3.FractionalPercent_MILLION:
			f.denominator = 1000000
		}
	}
	return f, nil
}

func (f runtimeFilter) evaluate(ctx *formatter.Context) bool {
	var v uint64
	id, ok := uint64(0), false
	if !f.independent && ctx.Stream != nil {
		id, ok = requestIDInteger(ctx.Stream.RequestID)
	}
	if ok {
		v = id % f.denominator
	} else {
		v = rand.Uint64()
	}
	return v%f.denominator < f.numerator
}

// requestIDInteger is Envoy's UUID request-id toInteger: the first 8
// characters as hex.
func requestIDInteger(id string) (uint64, bool) {
	if len(id) < 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(id[:8], 16, 64)
	return v, err == nil
}

type andFilter []filter

func (fs andFilter) evaluate(ctx *formatter.Context) bool {
	for _, f := range fs {
		if !f.evaluate(ctx) {
			return false
		}
	}
	return true
}

type orFilter []filter

func (fs orFilter) evaluate(ctx *formatter.Context) bool {
	for _, f := range fs {
		if f.evaluate(ctx) {
			return true
		}
	}
	return false
}

// headerFilter matches the request headers (none when ctx.Request is nil).
type headerFilter struct{ m *matcher.Header }

func (f headerFilter) evaluate(ctx *formatter.Context) bool {
	return f.m.Match(ctx.Request)
}

// responseFlagFilter passes when any of the listed flags is set, or any flag
// at all when none is listed.
type responseFlagFilter struct{ mask streaminfo.ResponseFlag }

var flagByName = func() map[string]streaminfo.ResponseFlag {
	m := map[string]streaminfo.ResponseFlag{}
	for i := 0; i < 32; i++ {
		f := streaminfo.ResponseFlag(1) << i
		if n := f.String(); n != "" && n != "-" {
			m[n] = f
		}
	}
	return m
}()

func compileResponseFlagFilter(r *accesslogv3.ResponseFlagFilter) (filter, error) {
	f := responseFlagFilter{}
	for _, n := range r.GetFlags() {
		// Validate() has checked n is one of Envoy's flags; flags outrider
		// never sets have no bit and never match.
		f.mask |= flagByName[n]
	}
	if len(r.GetFlags()) == 0 {
		f.mask = ^streaminfo.ResponseFlag(0)
	}
	return f, nil
}

func (f responseFlagFilter) evaluate(ctx *formatter.Context) bool {
	return ctx.Stream != nil && ctx.Stream.Flags&f.mask != 0
}

// grpcStatusFilter matches the gRPC status: the grpc-status trailer, else
// header, else the one mapped from the HTTP status; UNKNOWN when none.
type grpcStatusFilter struct {
	statuses uint32 // bit per status
	exclude  bool
}

func (f grpcStatusFilter) evaluate(ctx *formatter.Context) bool {
	st, ok := grpcStatus(ctx)
	found := ok && f.statuses&(1<<uint(st)) != 0
	return found != f.exclude
}

// grpcStatus reports the stream's gRPC status; ok=false for an invalid code
// (one that matches no listed status).
func grpcStatus(ctx *formatter.Context) (int, bool) {
	for _, m := range [...]*headers.Map{ctx.Trailers, ctx.Response} {
		if m == nil {
			continue
		}
		if v, ok := m.Get("grpc-status"); ok {
			n, err := strconv.ParseUint(string(v), 10, 32)
			if err != nil || n > 16 {
				return 0, false
			}
			return int(n), true
		}
	}
	if ctx.Stream != nil && ctx.Stream.ResponseCode != 0 {
		return grpcstatus.FromHTTP(ctx.Stream.ResponseCode), true
	}
	return 2, true // UNKNOWN
}

// logTypeFilter matches the Context's log type.
type logTypeFilter struct {
	types   uint64 // bit per AccessLogType
	exclude bool
}

func (f logTypeFilter) evaluate(ctx *formatter.Context) bool {
	t := ctx.LogType
	found := t >= 0 && t < 64 && f.types&(1<<uint(t)) != 0
	return found != f.exclude
}

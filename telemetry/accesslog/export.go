package accesslog

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// The access log's filter, format and data-source compilers, for other users
// of the same config messages (the connection manager's local_reply_config).

// Filter is a compiled AccessLogFilter. It is immutable and safe for
// concurrent use.
type Filter struct{ f filter }

// CompileFilter compiles an AccessLogFilter as access logs do. Errors start
// with the filter's field name ("status_code_filter.comparison: ...").
func CompileFilter(f *accesslogv3.AccessLogFilter) (*Filter, error) {
	c, err := compileFilter(f)
	if err != nil {
		return nil, err
	}
	return &Filter{c}, nil
}

// Evaluate reports whether ctx passes the filter.
func (f *Filter) Evaluate(ctx *formatter.Context) bool { return f.f.evaluate(ctx) }

// Substitution is a compiled SubstitutionFormatString: text (access-log form,
// or header-value form with omit_empty_values) or JSON (typed values, one
// object ending in a newline, as Envoy's).
type Substitution interface {
	Append(dst []byte, ctx *formatter.Context) []byte
}

// CompileSubstitution compiles text_format, text_format_source or
// json_format (formatters extensions are refused). Errors start with the
// field name ("json_format: ...").
func CompileSubstitution(s *corev3.SubstitutionFormatString) (Substitution, error) {
	return compileSubstitution(s)
}

// ReadDataSource reads a DataSource (inline_string, inline_bytes, filename,
// environment_variable) once, at config time. Errors start with the field
// name ("filename: ...").
func ReadDataSource(d *corev3.DataSource) (string, error) { return dataSource(d) }

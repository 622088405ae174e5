package accesslog

import (
	"errors"
	"fmt"
	"os"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

func init() {
	Register("envoy.access_loggers.file", []string{typeURL(&filev3.FileAccessLog{})}, newFileLogger)
	Register("envoy.access_loggers.stdout", []string{typeURL(&streamv3.StdoutAccessLog{})}, newStdoutLogger)
	Register("envoy.access_loggers.stderr", []string{typeURL(&streamv3.StderrAccessLog{})}, newStderrLogger)
	Registry.Alias("envoy.file_access_log", "envoy.access_loggers.file")
}

func typeURL(m proto.Message) string { return string(m.ProtoReflect().Descriptor().FullName()) }

// lineFormatter renders one log line; both *formatter.Formatter and
// *jsonFormatter are one.
type lineFormatter interface {
	Append(dst []byte, ctx *formatter.Context) []byte
}

var defaultFormatter = formatter.MustCompile(formatter.DefaultAccessLogFormat)

// writerLogger formats into a pooled scratch buffer and hands the line to a
// buffered Writer.
type writerLogger struct {
	f lineFormatter
	w Writer
}

var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (l *writerLogger) Log(ctx *formatter.Context) {
	bp := scratch.Get().(*[]byte)
	b := l.f.Append((*bp)[:0], ctx)
	l.w.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		scratch.Put(bp)
	}
}

// unmarshal decodes cfg into m; a nil cfg leaves m empty.
func unmarshal(cfg *anypb.Any, m proto.Message) error {
	if cfg == nil {
		return nil
	}
	if err := cfg.UnmarshalTo(m); err != nil {
		return fmt.Errorf("decoding %s: %w", typeURL(m), err)
	}
	if v, ok := m.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func newFileLogger(cfg *anypb.Any, b *Builder) (Logger, error) {
	c := &filev3.FileAccessLog{}
	if err := unmarshal(cfg, c); err != nil {
		return nil, err
	}
	if c.GetPath() == "" {
		return nil, errors.New("path: required")
	}
	var f lineFormatter
	var err error
	switch fm := c.GetAccessLogFormat().(type) {
	case nil:
		f = defaultFormatter
	case *filev3.FileAccessLog_Format:
		if fm.Format == "" {
			f = defaultFormatter
		} else if f, err = formatter.Compile(fm.Format); err != nil {
			return nil, fmt.Errorf("format: %w", err)
		}
	case *filev3.FileAccessLog_JsonFormat:
		if f, err = compileJSON(fm.JsonFormat, false, false); err != nil {
			return nil, fmt.Errorf("json_format: %w", err)
		}
	case *filev3.FileAccessLog_TypedJsonFormat:
		if f, err = compileJSON(fm.TypedJsonFormat, true, false); err != nil {
			return nil, fmt.Errorf("typed_json_format: %w", err)
		}
	case *filev3.FileAccessLog_LogFormat:
		if f, err = compileSubstitution(fm.LogFormat); err != nil {
			return nil, fmt.Errorf("log_format.%w", err)
		}
	default:
		return nil, fmt.Errorf("access_log_format: unsupported %T", fm)
	}
	w, err := b.OpenFile(c.GetPath())
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	return &writerLogger{f: f, w: w}, nil
}

func newStdoutLogger(cfg *anypb.Any, b *Builder) (Logger, error) {
	c := &streamv3.StdoutAccessLog{}
	if err := unmarshal(cfg, c); err != nil {
		return nil, err
	}
	return newStreamLogger(c.GetLogFormat(), stdoutPath, b)
}

func newStderrLogger(cfg *anypb.Any, b *Builder) (Logger, error) {
	c := &streamv3.StderrAccessLog{}
	if err := unmarshal(cfg, c); err != nil {
		return nil, err
	}
	return newStreamLogger(c.GetLogFormat(), stderrPath, b)
}

func newStreamLogger(sfs *corev3.SubstitutionFormatString, path string, b *Builder) (Logger, error) {
	var f lineFormatter = defaultFormatter
	if sfs != nil {
		var err error
		if f, err = compileSubstitution(sfs); err != nil {
			return nil, fmt.Errorf("log_format.%w", err)
		}
	}
	w, err := b.OpenFile(path)
	if err != nil {
		return nil, err
	}
	return &writerLogger{f: f, w: w}, nil
}

// compileSubstitution builds a SubstitutionFormatString. Errors start with
// the field name so callers can prefix "log_format.".
func compileSubstitution(s *corev3.SubstitutionFormatString) (lineFormatter, error) {
	if len(s.GetFormatters()) > 0 {
		return nil, fmt.Errorf("formatters: formatter extensions (%s) are not supported", s.GetFormatters()[0].GetName())
	}
	compileText := formatter.Compile
	if s.GetOmitEmptyValues() {
		compileText = formatter.CompileHeader
	}
	switch fm := s.GetFormat().(type) {
	case *corev3.SubstitutionFormatString_TextFormat:
		f, err := compileText(fm.TextFormat)
		if err != nil {
			return nil, fmt.Errorf("text_format: %w", err)
		}
		return f, nil
	case *corev3.SubstitutionFormatString_TextFormatSource:
		text, err := dataSource(fm.TextFormatSource)
		if err != nil {
			return nil, fmt.Errorf("text_format_source.%w", err)
		}
		f, err := compileText(text)
		if err != nil {
			return nil, fmt.Errorf("text_format_source: %w", err)
		}
		return f, nil
	case *corev3.SubstitutionFormatString_JsonFormat:
		f, err := compileJSON(fm.JsonFormat, true, s.GetOmitEmptyValues())
		if err != nil {
			return nil, fmt.Errorf("json_format: %w", err)
		}
		return f, nil
	}
	return nil, errors.New("format: one of text_format, json_format or text_format_source is required")
}

// dataSource reads a DataSource once at config time. Errors start with the
// field name.
func dataSource(d *corev3.DataSource) (string, error) {
	switch s := d.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return s.InlineString, nil
	case *corev3.DataSource_InlineBytes:
		return string(s.InlineBytes), nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return "", fmt.Errorf("filename: %w", err)
		}
		return string(b), nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return "", fmt.Errorf("environment_variable: %q is not set", s.EnvironmentVariable)
		}
		return v, nil
	}
	return "", errors.New("specifier: required")
}

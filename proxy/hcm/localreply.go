package hcm

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/telemetry/accesslog"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// localReply is a compiled local_reply_config (Envoy's LocalReplyImpl,
// source/common/local_reply/local_reply.cc). A nil *localReply is Envoy's
// default: the body as the connection manager or filter gave it, as
// text/plain.
type localReply struct {
	mappers []replyMapper
	// format is body_format; nil: the body unchanged, text/plain.
	format *bodyFormat
}

// replyMapper is one ResponseMapper.
type replyMapper struct {
	filter *accesslog.Filter
	status int     // status_code; 0: keep the reply's
	body   *string // body; nil: keep the reply's
	add    router.HeadersToAdd
	format *bodyFormat // body_format_override; nil: the config's body_format
}

// bodyFormat is a SubstitutionFormatString with the content type it gives
// the reply.
type bodyFormat struct {
	f           accesslog.Substitution
	contentType string
}

const (
	contentTypeText = "text/plain"
	contentTypeJSON = "application/json"
)

// compileLocalReply compiles local_reply_config; nil for an absent one.
// Errors name the field below local_reply_config.
func compileLocalReply(p *hcmv3.LocalReplyConfig) (*localReply, error) {
	if p == nil {
		return nil, nil
	}
	if err := confcheck.Fields(p, "local_reply_config", "mappers", "body_format"); err != nil {
		return nil, err
	}
	lr := &localReply{}
	if p.GetBodyFormat() != nil {
		f, err := compileBodyFormat(p.GetBodyFormat())
		if err != nil {
			return nil, fmt.Errorf("local_reply_config.body_format.%w", err)
		}
		lr.format = f
	}
	for i, m := range p.GetMappers() {
		rm, err := compileMapper(m)
		if err != nil {
			return nil, fmt.Errorf("local_reply_config.mappers[%d].%w", i, err)
		}
		lr.mappers = append(lr.mappers, rm)
	}
	return lr, nil
}

// compileMapper compiles one ResponseMapper; errors start with the field.
func compileMapper(m *hcmv3.ResponseMapper) (replyMapper, error) {
	var rm replyMapper
	if m.GetFilter() == nil {
		return rm, errors.New("filter: required")
	}
	f, err := accesslog.CompileFilter(m.GetFilter())
	if err != nil {
		return rm, fmt.Errorf("filter.%w", err)
	}
	rm.filter = f
	if sc := m.GetStatusCode(); sc != nil {
		if v := sc.GetValue(); v < 200 || v >= 600 {
			return rm, fmt.Errorf("status_code: %d is not in [200, 600)", v)
		}
		rm.status = int(sc.GetValue())
	}
	if m.GetBody() != nil {
		b, err := accesslog.ReadDataSource(m.GetBody())
		if err != nil {
			return rm, fmt.Errorf("body.%w", err)
		}
		rm.body = &b
	}
	if len(m.GetHeadersToAdd()) > 1000 {
		return rm, fmt.Errorf("headers_to_add: %d entries, at most 1000", len(m.GetHeadersToAdd()))
	}
	if rm.add, err = router.CompileHeadersToAdd(m.GetHeadersToAdd(), "headers_to_add"); err != nil {
		return rm, err
	}
	if m.GetBodyFormatOverride() != nil {
		if rm.format, err = compileBodyFormat(m.GetBodyFormatOverride()); err != nil {
			return rm, fmt.Errorf("body_format_override.%w", err)
		}
	}
	return rm, nil
}

// compileBodyFormat compiles a SubstitutionFormatString and its content
// type: content_type, else application/json for json_format, else
// text/plain.
func compileBodyFormat(s *corev3.SubstitutionFormatString) (*bodyFormat, error) {
	f, err := accesslog.CompileSubstitution(s)
	if err != nil {
		return nil, err
	}
	bf := &bodyFormat{f: f, contentType: s.GetContentType()}
	if bf.contentType == "" {
		bf.contentType = contentTypeText
		if s.GetJsonFormat() != nil {
			bf.contentType = contentTypeJSON
		}
	}
	return bf, nil
}

// rewrite is Envoy's LocalReplyImpl::rewrite for the reply whose headers
// (its status and the filters' local-reply headers) are in s.resp: the first
// mapper whose filter matches the reply's code, the request and the stream
// info rewrites the body, adds its headers and rewrites the code; then the
// mapper's or the config's body format renders the body. It returns the
// reply's code, body and the content type the body gets.
func (lr *localReply) rewrite(s *stream, status int, body string) (int, string, string) {
	s.resp.SetInt(headers.Status, int64(status))
	s.info.ResponseCode = status
	ctx := formatter.Context{Stream: &s.info, Request: &s.req, Response: &s.resp} // no trailers
	format := lr.format
	for i := range lr.mappers {
		m := &lr.mappers[i]
		if !m.filter.Evaluate(&ctx) {
			continue
		}
		if m.body != nil {
			body = *m.body
		}
		m.add.Apply(&s.resp, &ctx)
		if m.status != 0 && m.status != status {
			status = m.status
			s.resp.SetInt(headers.Status, int64(status))
			s.info.ResponseCode = status
		}
		if m.format != nil {
			format = m.format
		}
		break
	}
	if format == nil {
		return status, body, contentTypeText
	}
	ctx.LocalReplyBody = body
	return status, string(format.f.Append(nil, &ctx)), format.contentType
}

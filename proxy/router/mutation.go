package router

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// headerMutation is one level's headers_to_remove and headers_to_add. A nil
// *headerMutation does nothing.
type headerMutation struct {
	remove []string
	add    []headerAdd
}

type headerAdd struct {
	name      string
	value     *formatter.Formatter // header-value form: missing values are empty
	action    corev3.HeaderValueOption_HeaderAppendAction
	keepEmpty bool
}

// modifiable is Envoy's HeaderUtility::isModifiableHeader / isRemovableHeader.
func modifiable(name string) bool {
	return !strings.HasPrefix(name, ":") && !strings.EqualFold(name, "host")
}

// compileMutation compiles <field>_add and <field>_remove; field is e.g.
// "request_headers_to".
func compileMutation(add []*corev3.HeaderValueOption, remove []string, field string) (*headerMutation, error) {
	if len(add) == 0 && len(remove) == 0 {
		return nil, nil
	}
	adds, err := compileAdds(add, field+"_add")
	if err != nil {
		return nil, err
	}
	m := &headerMutation{add: adds}
	for i, name := range remove {
		if name == "" || !modifiable(name) {
			return nil, fmt.Errorf("%s_remove[%d]: :-prefixed or host headers may not be removed", field, i)
		}
		m.remove = append(m.remove, strings.ToLower(name))
	}
	return m, nil
}

// compileAdds compiles a HeaderValueOption list as Envoy's HeaderParser
// does (the legacy append flag included); errors name field[i].
func compileAdds(add []*corev3.HeaderValueOption, field string) ([]headerAdd, error) {
	var adds []headerAdd
	for i, o := range add {
		where := fmt.Sprintf("%s[%d]", field, i)
		name := o.GetHeader().GetKey()
		if name == "" {
			return nil, errors.New(where + ".header.key: required")
		}
		if !modifiable(name) {
			return nil, errors.New(where + ".header.key: :-prefixed or host headers may not be modified")
		}
		ha := headerAdd{name: strings.ToLower(name), action: o.GetAppendAction(), keepEmpty: o.GetKeepEmptyValue()}
		if a := o.GetAppend(); a != nil {
			if o.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return nil, errors.New(where + ": both append and append_action are set and it's not allowed")
			}
			ha.action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			if a.GetValue() {
				ha.action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
		}
		value := o.GetHeader().GetValue()
		if value == "" && len(o.GetHeader().GetRawValue()) > 0 {
			value = string(o.GetHeader().GetRawValue())
		}
		f, err := formatter.CompileHeader(value)
		if err != nil {
			return nil, fmt.Errorf("%s.header.value: %w", where, err)
		}
		ha.value = f
		adds = append(adds, ha)
	}
	return adds, nil
}

// HeadersToAdd is a compiled headers_to_add list (HeaderValueOptions) for
// filters that add headers the way routes do. The zero value adds nothing.
type HeadersToAdd struct{ m *headerMutation }

// CompileHeadersToAdd compiles opts as Envoy's HeaderParser does (the legacy
// append flag included); errors name field[i].
func CompileHeadersToAdd(opts []*corev3.HeaderValueOption, field string) (HeadersToAdd, error) {
	adds, err := compileAdds(opts, field)
	if err != nil || len(adds) == 0 {
		return HeadersToAdd{}, err
	}
	return HeadersToAdd{&headerMutation{add: adds}}, nil
}

// Apply renders every value against h and ctx, then overwrites and adds
// them in h following their append actions, as Envoy's
// HeaderParser::evaluateHeaders. Empty values are skipped unless
// keep_empty_value.
func (a HeadersToAdd) Apply(h *headers.Map, ctx *formatter.Context) { a.m.apply(h, ctx) }

// Empty reports whether there is nothing to add.
func (a HeadersToAdd) Empty() bool { return a.m == nil }

// scratch holds rendered values while one mutation is evaluated.
type scratch struct {
	buf  []byte
	ends []int
	ops  []uint8 // 0 skip, 1 overwrite, 2 add
}

var scratchPool = sync.Pool{New: func() any { return &scratch{buf: make([]byte, 0, 256)} }}

// apply follows Envoy's HeaderParser::evaluateHeaders: remove first, then
// render every value against the headers as they are, then overwrite, then
// add. Empty values are skipped unless keep_empty_value.
func (m *headerMutation) apply(h *headers.Map, ctx *formatter.Context) {
	if m == nil {
		return
	}
	for _, name := range m.remove {
		h.Del(name)
	}
	if len(m.add) == 0 {
		return
	}
	s := scratchPool.Get().(*scratch)
	s.buf, s.ends, s.ops = s.buf[:0], s.ends[:0], s.ops[:0]
	for i := range m.add {
		a := &m.add[i]
		start := len(s.buf)
		s.buf = a.value.Append(s.buf, ctx)
		s.ends = append(s.ends, len(s.buf))
		var op uint8
		if len(s.buf) > start || a.keepEmpty {
			switch a.action {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
				op = 2
			case corev3.HeaderValueOption_ADD_IF_ABSENT:
				if !h.Has(a.name) {
					op = 2
				}
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
				if h.Has(a.name) {
					op = 1
				}
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				op = 1
			}
		}
		s.ops = append(s.ops, op)
	}
	for pass := uint8(1); pass <= 2; pass++ {
		start := 0
		for i := range m.add {
			end := s.ends[i]
			if s.ops[i] == pass {
				v := s.buf[start:end]
				if pass == 1 {
					h.SetBytes(m.add[i].name, v)
				} else {
					h.AddBytes(m.add[i].name, v)
				}
			}
			start = end
		}
	}
	scratchPool.Put(s)
}

package localratelimit

import (
	"errors"
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// headerAdd is one compiled HeaderValueOption.
type headerAdd struct {
	name      string
	value     *formatter.Formatter
	action    corev3.HeaderValueOption_HeaderAppendAction
	keepEmpty bool
}

// compileHeaders compiles a HeaderValueOption list as Envoy's HeaderParser
// does (the legacy append flag included); errors name field[i].
func compileHeaders(opts []*corev3.HeaderValueOption, field string) ([]headerAdd, error) {
	var out []headerAdd
	for i, o := range opts {
		where := fmt.Sprintf("%s[%d]", field, i)
		name := strings.ToLower(o.GetHeader().GetKey())
		if name == "" {
			return nil, errors.New(where + ".header.key: required")
		}
		if strings.HasPrefix(name, ":") || name == "host" {
			return nil, errors.New(where + ".header.key: :-prefixed or host headers may not be modified")
		}
		ha := headerAdd{name: name, action: o.GetAppendAction(), keepEmpty: o.GetKeepEmptyValue()}
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
		out = append(out, ha)
	}
	return out, nil
}

// applyHeaders renders every value first, then sets or adds it following
// its append action, as Envoy's HeaderParser::evaluateHeaders. existing is
// the map the actions test for presence (nil: an empty one, as a local
// reply's headers are to a filter); empty values are skipped unless
// keep_empty_value.
func applyHeaders(adds []headerAdd, existing *headers.Map, ctx *formatter.Context, set, add func(name, value string)) {
	if len(adds) == 0 {
		return
	}
	values := make([]string, len(adds))
	for i := range adds {
		values[i] = string(adds[i].value.Append(nil, ctx))
	}
	for i := range adds {
		a := &adds[i]
		if values[i] == "" && !a.keepEmpty {
			continue
		}
		has := existing != nil && existing.Has(a.name)
		switch a.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			add(a.name, values[i])
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !has {
				add(a.name, values[i])
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if has {
				set(a.name, values[i])
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			set(a.name, values[i])
		}
	}
}

package accesslog

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// jsonFormatter renders an Envoy format dictionary (json_format,
// typed_json_format) as one JSON object per line. Keys come out sorted, as
// Envoy always sorts them.
type jsonFormatter struct {
	root      jsonNode
	typed     bool // single-operator values keep their type; missing ones are null
	omitEmpty bool // missing values (and objects left empty) are dropped
}

type jsonKind uint8

const (
	jObject jsonKind = iota
	jList
	jValue   // a format string
	jLiteral // a number from the config, pre-rendered
)

// jsonNode is one compiled value. For objects keys[i] is the quoted key with
// its colon ("\"code\":") of children[i].
type jsonNode struct {
	kind     jsonKind
	keys     []string
	children []jsonNode
	f        *formatter.Formatter
	literal  string
}

func compileJSON(s *structpb.Struct, typed, omitEmpty bool) (*jsonFormatter, error) {
	if s == nil {
		return nil, errors.New("format dictionary is empty")
	}
	j := &jsonFormatter{typed: typed, omitEmpty: omitEmpty}
	root, err := j.compileStruct(s)
	if err != nil {
		return nil, err
	}
	j.root = root
	return j, nil
}

func (j *jsonFormatter) compileStruct(s *structpb.Struct) (jsonNode, error) {
	n := jsonNode{kind: jObject}
	keys := make([]string, 0, len(s.GetFields()))
	for k := range s.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c, err := j.compileValue(s.GetFields()[k])
		if err != nil {
			return n, fmt.Errorf("%s: %w", k, err)
		}
		q := appendJSONString(nil, []byte(k))
		n.keys = append(n.keys, string(append(q, ':')))
		n.children = append(n.children, c)
	}
	return n, nil
}

func (j *jsonFormatter) compileValue(v *structpb.Value) (jsonNode, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		var f *formatter.Formatter
		var err error
		if j.omitEmpty {
			f, err = formatter.CompileHeader(k.StringValue)
		} else {
			f, err = formatter.Compile(k.StringValue)
		}
		if err != nil {
			return jsonNode{}, err
		}
		return jsonNode{kind: jValue, f: f}, nil
	case *structpb.Value_StructValue:
		return j.compileStruct(k.StructValue)
	case *structpb.Value_ListValue:
		n := jsonNode{kind: jList}
		for i, e := range k.ListValue.GetValues() {
			c, err := j.compileValue(e)
			if err != nil {
				return n, fmt.Errorf("[%d]: %w", i, err)
			}
			n.children = append(n.children, c)
		}
		return n, nil
	case *structpb.Value_NumberValue:
		return jsonNode{kind: jLiteral, literal: strconv.FormatFloat(k.NumberValue, 'g', -1, 64)}, nil
	}
	return jsonNode{}, errors.New("only string values, nested structs, list values and number values are supported in structured access log format")
}

// Append renders one JSON line for ctx onto dst.
func (j *jsonFormatter) Append(dst []byte, ctx *formatter.Context) []byte {
	dst, _ = j.appendNode(dst, &j.root, ctx, true)
	return append(dst, '\n')
}

// appendNode renders n; ok=false means it was omitted (nothing appended).
func (j *jsonFormatter) appendNode(dst []byte, n *jsonNode, ctx *formatter.Context, root bool) ([]byte, bool) {
	start := len(dst)
	switch n.kind {
	case jLiteral:
		return append(dst, n.literal...), true
	case jValue:
		return j.appendValue(dst, n.f, ctx)
	case jList:
		dst = append(dst, '[')
		first := true
		for i := range n.children {
			mark := len(dst)
			if !first {
				dst = append(dst, ',')
			}
			var ok bool
			if dst, ok = j.appendNode(dst, &n.children[i], ctx, false); !ok {
				dst = dst[:mark]
				continue
			}
			first = false
		}
		return append(dst, ']'), true
	}
	dst = append(dst, '{')
	empty := true
	for i := range n.children {
		mark := len(dst)
		if !empty {
			dst = append(dst, ',')
		}
		dst = append(dst, n.keys[i]...)
		var ok bool
		if dst, ok = j.appendNode(dst, &n.children[i], ctx, false); !ok {
			dst = dst[:mark]
			continue
		}
		empty = false
	}
	if empty && j.omitEmpty && !root {
		return dst[:start], false
	}
	return append(dst, '}'), true
}

func (j *jsonFormatter) appendValue(dst []byte, f *formatter.Formatter, ctx *formatter.Context) ([]byte, bool) {
	start := len(dst)
	dst = append(dst, '"')
	open := len(dst)
	var typ formatter.ValueType
	if j.typed || j.omitEmpty {
		dst, typ = f.AppendValue(dst, ctx)
	} else {
		dst, typ = f.Append(dst, ctx), formatter.ValueString
	}
	switch {
	case typ == formatter.ValueMissing && j.omitEmpty:
		return dst[:start], false
	case typ == formatter.ValueMissing && j.typed:
		return append(dst[:start], "null"...), true
	case typ == formatter.ValueMissing:
		return append(dst[:open], "\"-\""...), true
	case typ == formatter.ValueNumber && j.typed:
		copy(dst[start:], dst[open:])
		return dst[:len(dst)-1], true
	}
	dst = escapeInPlace(dst, open)
	return append(dst, '"'), true
}

// appendJSONString appends s quoted and escaped.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	open := len(dst)
	dst = append(dst, s...)
	dst = escapeInPlace(dst, open)
	return append(dst, '"')
}

// escapeInPlace JSON-escapes dst[from:]. Invalid UTF-8 becomes U+FFFD.
func escapeInPlace(dst []byte, from int) []byte {
	i := from
	for i < len(dst) {
		c := dst[i]
		if c < 0x20 || c == '"' || c == '\\' {
			break
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(dst[i:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			i += size
			continue
		}
		i++
	}
	if i == len(dst) {
		return dst
	}
	// Escape the rest after the current end, then move it back; raw keeps
	// pointing at the original bytes even if append reallocates.
	end := len(dst)
	raw := dst[i:end]
	for k := 0; k < len(raw); {
		c := raw[k]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(raw[k:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\ufffd"...)
			} else {
				dst = append(dst, raw[k:k+size]...)
			}
			k += size
			continue
		default:
			dst = append(dst, c)
		}
		k++
	}
	n := copy(dst[i:], dst[end:])
	return dst[:i+n]
}

const hexDigits = "0123456789abcdef"

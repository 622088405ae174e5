package bootstrap

import (
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// fieldError is a decode or validation failure at a field path such as
// "static_resources.listeners[0].name". An empty path is the top-level message.
type fieldError struct {
	path   string
	reason string
}

func (e *fieldError) Error() string {
	if e.path == "" {
		return e.reason
	}
	return e.path + ": " + e.reason
}

func joinField(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func joinIndex(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func joinKey(path, key string) string { return path + "[" + strconv.Quote(key) + "]" }

// findField looks a JSON member name up the way protojson does: JSON name
// first, then the proto field name.
func findField(md protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	fields := md.Fields()
	if fd := fields.ByJSONName(name); fd != nil {
		return fd
	}
	return fields.ByTextName(name)
}

// specialJSON reports whether a well-known type has its own JSON form, so that
// inside an Any its content is under "value".
func specialJSON(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case "google.protobuf.Any", "google.protobuf.Duration", "google.protobuf.Timestamp",
		"google.protobuf.FieldMask", "google.protobuf.Struct", "google.protobuf.Value",
		"google.protobuf.ListValue", "google.protobuf.Empty":
		return true
	}
	return isWrapper(md)
}

func isWrapper(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case "google.protobuf.BoolValue", "google.protobuf.BytesValue", "google.protobuf.DoubleValue",
		"google.protobuf.FloatValue", "google.protobuf.Int32Value", "google.protobuf.Int64Value",
		"google.protobuf.StringValue", "google.protobuf.UInt32Value", "google.protobuf.UInt64Value":
		return true
	}
	return false
}

// normalizeMessage rewrites the JSON tree v of a message of type md into the
// strict proto3 JSON form protojson accepts, applying the leniencies of the
// protobuf C++ parser Envoy uses (legacy syntax, case-insensitive enums). It
// rejects unknown fields and unknown Any types with the field path; anything
// else that is malformed is left for protojson (and locate) to report.
func normalizeMessage(v any, md protoreflect.MessageDescriptor, path string) (any, error) {
	switch md.FullName() {
	case "google.protobuf.Any":
		return normalizeAny(v, path)
	case "google.protobuf.Struct", "google.protobuf.Value":
		return v, nil
	}
	obj, ok := v.(object)
	if !ok {
		return v, nil
	}
	// Legacy syntax: these well-known types may be written as plain messages.
	switch md.FullName() {
	case "google.protobuf.Duration":
		if s, ok := secondsNanos(obj, "s"); ok {
			return s, nil
		}
		if _, _, ok := secondsNanosValues(obj); ok {
			return nil, &fieldError{path, fmt.Sprintf("invalid google.protobuf.Duration value %s", encodeTree(obj))}
		}
		return v, nil
	case "google.protobuf.Timestamp":
		if s, ok := timestampString(obj); ok {
			return s, nil
		}
		return v, nil
	case "google.protobuf.FieldMask":
		if s, ok := fieldMaskString(obj); ok {
			return s, nil
		}
		return v, nil
	case "google.protobuf.ListValue":
		if len(obj) == 1 && obj[0].name == "values" {
			if l, ok := obj[0].value.([]any); ok {
				return l, nil
			}
		}
		return v, nil
	}
	if isWrapper(md) {
		if len(obj) == 1 && obj[0].name == "value" {
			return obj[0].value, nil
		}
		return v, nil
	}
	out := make(object, len(obj))
	for i, m := range obj {
		out[i] = m
		if strings.HasPrefix(m.name, "[") {
			continue // extension field: protojson resolves it
		}
		fd := findField(md, m.name)
		if fd == nil {
			return nil, &fieldError{path, fmt.Sprintf("unknown field %q", m.name)}
		}
		nv, err := normalizeField(m.value, fd, joinField(path, string(fd.Name())))
		if err != nil {
			return nil, err
		}
		out[i].value = nv
	}
	return out, nil
}

func normalizeField(v any, fd protoreflect.FieldDescriptor, path string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch {
	case fd.IsMap():
		obj, ok := v.(object)
		if !ok {
			return v, nil
		}
		out := make(object, len(obj))
		for i, m := range obj {
			nv, err := normalizeSingular(m.value, fd.MapValue(), joinKey(path, m.name))
			if err != nil {
				return nil, err
			}
			out[i] = member{m.name, nv}
		}
		return out, nil
	case fd.IsList():
		list, ok := v.([]any)
		if !ok {
			list = []any{v} // legacy syntax: one element in place of a list
		}
		out := make([]any, len(list))
		for i, e := range list {
			nv, err := normalizeSingular(e, fd, joinIndex(path, i))
			if err != nil {
				return nil, err
			}
			out[i] = nv
		}
		return out, nil
	}
	return normalizeSingular(v, fd, path)
}

func normalizeSingular(v any, fd protoreflect.FieldDescriptor, path string) (any, error) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if v == nil && fd.Message().FullName() != "google.protobuf.Value" {
			return nil, nil
		}
		return normalizeMessage(v, fd.Message(), path)
	case protoreflect.EnumKind:
		// Envoy parses with case_insensitive_enum_parsing: "grpc" is GRPC.
		if s, ok := v.(string); ok && fd.Enum().Values().ByName(protoreflect.Name(s)) == nil {
			if up := strings.ToUpper(s); fd.Enum().Values().ByName(protoreflect.Name(up)) != nil {
				return up, nil
			}
		}
	}
	return v, nil
}

func normalizeAny(v any, path string) (any, error) {
	obj, ok := v.(object)
	if !ok {
		return v, nil
	}
	tv, ok := obj.get("@type")
	url, isString := tv.(string)
	if !ok || !isString {
		return v, nil // protojson reports the missing or malformed @type
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		return nil, &fieldError{path, fmt.Sprintf("unknown type %q", url)}
	}
	md := mt.Descriptor()
	if specialJSON(md) {
		inner, ok := obj.get("value")
		if !ok {
			return v, nil
		}
		nv, err := normalizeMessage(inner, md, path)
		if err != nil {
			return nil, err
		}
		return object{{"@type", url}, {"value", nv}}, nil
	}
	nv, err := normalizeMessage(obj.without("@type"), md, path)
	if err != nil {
		return nil, err
	}
	body, ok := nv.(object)
	if !ok {
		return v, nil
	}
	return append(object{{"@type", url}}, body...), nil
}

// secondsNanos renders {seconds, nanos} (numbers or numeric strings) as the
// proto3 JSON duration string, e.g. "1.500s". ok is false when the object is
// not exactly of that shape.
func secondsNanos(obj object, suffix string) (string, bool) {
	secs, nanos, ok := secondsNanosValues(obj)
	if !ok || nanos.Sign()*secs.Sign() < 0 {
		return "", false
	}
	neg := secs.Sign() < 0 || nanos.Sign() < 0
	s := new(big.Int).Abs(secs).String()
	n := new(big.Int).Abs(nanos)
	if n.Sign() != 0 {
		if n.Cmp(big.NewInt(999999999)) > 0 {
			return "", false
		}
		s += fmt.Sprintf(".%09d", n.Int64())
	}
	if neg {
		s = "-" + s
	}
	return s + suffix, true
}

func secondsNanosValues(obj object) (secs, nanos *big.Int, ok bool) {
	secs, nanos = new(big.Int), new(big.Int)
	for _, m := range obj {
		var dst *big.Int
		switch m.name {
		case "seconds":
			dst = secs
		case "nanos":
			dst = nanos
		default:
			return nil, nil, false
		}
		var text string
		switch t := m.value.(type) {
		case json.Number:
			text = string(t)
		case string:
			text = t
		default:
			return nil, nil, false
		}
		if _, ok := dst.SetString(text, 10); !ok {
			return nil, nil, false
		}
	}
	return secs, nanos, true
}

func timestampString(obj object) (string, bool) {
	secs, nanos, ok := secondsNanosValues(obj)
	if !ok || !secs.IsInt64() || nanos.Sign() < 0 || nanos.Cmp(big.NewInt(999999999)) > 0 {
		return "", false
	}
	return time.Unix(secs.Int64(), nanos.Int64()).UTC().Format(time.RFC3339Nano), true
}

func fieldMaskString(obj object) (string, bool) {
	if len(obj) != 1 || obj[0].name != "paths" {
		return "", false
	}
	var paths []any
	switch p := obj[0].value.(type) {
	case []any:
		paths = p
	default:
		paths = []any{p}
	}
	parts := make([]string, len(paths))
	for i, p := range paths {
		s, ok := p.(string)
		if !ok {
			return "", false
		}
		parts[i] = snakeToCamel(s)
	}
	return strings.Join(parts, ","), true
}

func snakeToCamel(s string) string {
	var b strings.Builder
	up := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' && i+1 < len(s) && s[i+1] >= 'a' && s[i+1] <= 'z' {
			up = true
			continue
		}
		if up {
			c -= 'a' - 'A'
			up = false
		}
		b.WriteByte(c)
	}
	return b.String()
}

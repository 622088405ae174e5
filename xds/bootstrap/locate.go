package bootstrap

import (
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

var unmarshalJSON = protojson.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}

// newMessage returns an empty message of type md, generated when linked in.
func newMessage(md protoreflect.MessageDescriptor) proto.Message {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName()); err == nil {
		return mt.New().Interface()
	}
	return dynamicpb.NewMessage(md)
}

// decodeAs unmarshals the JSON tree v as a message of type md.
func decodeAs(v any, md protoreflect.MessageDescriptor) error {
	return unmarshalJSON.Unmarshal(encodeTree(v), newMessage(md))
}

// protojsonPrefix matches the decoration protojson puts before its reasons.
var protojsonPrefix = regexp.MustCompile(`^(proto:\s*)?`)

// protojsonPos matches the position protojson puts in its messages.
var protojsonPos = regexp.MustCompile(`\s*\(line (\d+):\d+\)`)

// reason turns a protojson error into a one-line reason without position
// decoration (the position is meaningless: it is in re-encoded JSON).
func reason(err error) string {
	s := strings.ReplaceAll(err.Error(), "\u00a0", " ")
	s = protojsonPrefix.ReplaceAllString(s, "")
	s = protojsonPos.ReplaceAllString(s, "")
	s = strings.TrimPrefix(s, ": ")
	s = strings.Join(strings.Fields(s), " ")
	return s
}

// locate finds which field of the JSON tree v (a message of type md at path)
// protojson rejects, by decoding ever smaller sub-trees. It returns nil when v
// decodes cleanly.
func locate(v any, md protoreflect.MessageDescriptor, path string) *fieldError {
	err := decodeAs(v, md)
	if err == nil {
		return nil
	}
	here := &fieldError{path, reason(err)}
	obj, ok := v.(object)
	if !ok {
		return here
	}
	if md.FullName() == "google.protobuf.Any" {
		url, _ := getString(obj, "@type")
		mt, terr := protoregistry.GlobalTypes.FindMessageByURL(url)
		if terr != nil {
			return here
		}
		inner := mt.Descriptor()
		if specialJSON(inner) {
			if val, ok := obj.get("value"); ok {
				if fe := locate(val, inner, path); fe != nil {
					return fe
				}
			}
			return here
		}
		if fe := locate(obj.without("@type"), inner, path); fe != nil {
			return fe
		}
		return here
	}
	if specialJSON(md) || isWrapper(md) {
		return here
	}
	for _, m := range obj {
		if decodeAs(object{m}, md) == nil {
			continue
		}
		fd := findField(md, m.name)
		if fd == nil {
			return &fieldError{path, reason(decodeAs(object{m}, md))}
		}
		if fe := locateField(m, fd, md, joinField(path, string(fd.Name()))); fe != nil {
			return fe
		}
	}
	return here
}

// locateField narrows a failing member m (field fd of md) to an element,
// map entry or sub-field.
func locateField(m member, fd protoreflect.FieldDescriptor, md protoreflect.MessageDescriptor, path string) *fieldError {
	fail := func() *fieldError { return &fieldError{path, reason(decodeAs(object{m}, md))} }
	isMsg := fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind
	switch {
	case fd.IsMap():
		obj, ok := m.value.(object)
		if !ok {
			return fail()
		}
		for _, e := range obj {
			if decodeAs(object{{m.name, object{e}}}, md) == nil {
				continue
			}
			p := joinKey(path, e.name)
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				if fe := locate(e.value, fd.MapValue().Message(), p); fe != nil {
					return fe
				}
			}
			return &fieldError{p, reason(decodeAs(object{{m.name, object{e}}}, md))}
		}
		return fail()
	case fd.IsList():
		list, ok := m.value.([]any)
		if !ok {
			return fail()
		}
		for i, e := range list {
			if decodeAs(object{{m.name, []any{e}}}, md) == nil {
				continue
			}
			p := joinIndex(path, i)
			if isMsg {
				if fe := locate(e, fd.Message(), p); fe != nil {
					return fe
				}
			}
			return &fieldError{p, reason(decodeAs(object{{m.name, []any{e}}}, md))}
		}
		return fail()
	case isMsg:
		if fe := locate(m.value, fd.Message(), path); fe != nil {
			return fe
		}
	}
	return fail()
}

func getString(obj object, name string) (string, bool) {
	v, ok := obj.get(name)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	return s, ok
}

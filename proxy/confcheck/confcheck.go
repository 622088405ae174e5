// Package confcheck refuses config fields that outrider does not implement
// yet. Every compiler lists the fields it honours; any other field that is set
// is an error naming its path, so nothing that changes behaviour is ignored.
package confcheck

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Fields returns an error for the first field set in m that is not in known
// (proto field names, as in the YAML). path prefixes the field in the message.
func Fields(m proto.Message, path string, known ...string) error {
	var bad protoreflect.FieldDescriptor
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if slices.Contains(known, string(fd.Name())) {
			return true
		}
		if od := fd.ContainingOneof(); od != nil && slices.Contains(known, string(od.Name())) {
			return true
		}
		bad = fd
		return false
	})
	if bad == nil {
		return nil
	}
	return fmt.Errorf("%s: field not supported by outrider yet", Join(path, string(bad.Name())))
}

// Join appends a field name to a dotted path.
func Join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

package bootstrap

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// LoadMessage decodes data into m as Envoy's MessageUtil::loadFromFile does
// for any message (a DiscoveryResponse of file-based xDS, for one): the
// format is chosen by name's suffix as in LoadBytes, YAML and JSON are read
// as leniently as a bootstrap, and m is validated. Errors are one line
// naming name, the field path and the reason.
func LoadMessage(name string, data []byte, m proto.Message) error {
	if err := decodeMessage(name, data, m); err != nil {
		return err
	}
	if err := validateTree(m.ProtoReflect(), ""); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func decodeMessage(name string, data []byte, m proto.Message) error {
	lower := strings.ToLower(name)
	switch {
	case strings.HasSuffix(lower, ".pb"):
		if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(data, m); err != nil {
			return fmt.Errorf("%s: invalid binary proto: %s", name, reason(err))
		}
		if err := checkUnknown(m.ProtoReflect(), ""); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	case strings.HasSuffix(lower, ".pb_text"):
		if err := (prototext.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(data, m); err != nil {
			return fmt.Errorf("%s: %s", name, reason(err))
		}
		return nil
	}
	isYAML := strings.HasSuffix(lower, ".yaml") || strings.HasSuffix(lower, ".yml")
	var tree any
	var err error
	if isYAML {
		if tree, err = parseYAML(data); err != nil {
			return yamlError(name, err)
		}
	} else if tree, err = parseTree(data); err != nil {
		return jsonError(name, data, err)
	}
	if _, ok := tree.(object); !ok {
		return fmt.Errorf("%s: top-level value must be a mapping, not %s", name, kindOf(tree))
	}
	md := m.ProtoReflect().Descriptor()
	norm, err := normalizeMessage(tree, md, "")
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := unmarshalJSON.Unmarshal(encodeTree(norm), m); err != nil {
		if fe := locate(norm, md, ""); fe != nil {
			return fmt.Errorf("%s: %w", name, fe)
		}
		return fmt.Errorf("%s: %s", name, reason(err))
	}
	return nil
}

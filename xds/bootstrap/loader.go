// Package bootstrap loads Envoy v3 bootstrap files as `envoy -c FILE
// [--config-yaml YAML]` does, into a validated *bootstrapv3.Bootstrap, or
// fails with one line naming the file, the field path and the reason.
// Importing it links every Envoy extension proto into
// protoregistry.GlobalTypes, so typed_config Any values resolve everywhere.
package bootstrap

//go:generate sh gentypes.sh

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Source names where a bootstrap comes from, like Envoy's command line.
type Source struct {
	// Path is -c / --config-path; "" when only YAML is given.
	Path string
	// YAML is --config-yaml, merged over the file with proto MergeFrom
	// semantics (scalars replaced, messages merged, repeated fields
	// appended); "" for none.
	YAML string
}

// configYAMLName is the name errors use for Source.YAML.
const configYAMLName = "--config-yaml"

// Load reads src.Path (format chosen by extension, see LoadBytes), merges
// src.YAML over it and validates the result, as Envoy does at start-up.
func Load(src Source) (*bootstrapv3.Bootstrap, error) {
	if src.Path == "" && src.YAML == "" {
		return nil, errors.New("bootstrap: at least one of --config-path or --config-yaml must be non-empty")
	}
	b := &bootstrapv3.Bootstrap{}
	name := configYAMLName
	if src.Path != "" {
		data, err := os.ReadFile(src.Path)
		if err != nil {
			return nil, err // *fs.PathError: "open FILE: reason"
		}
		if b, err = decode(src.Path, data); err != nil {
			return nil, err
		}
		name = src.Path
	}
	if src.YAML != "" {
		over, err := decodeJSON(configYAMLName, []byte(src.YAML), true)
		if err != nil {
			return nil, err
		}
		proto.Merge(b, over)
	}
	if err := validateTree(b.ProtoReflect(), ""); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}

// LoadBytes decodes and validates one bootstrap. name is used in error
// messages and picks the format as Envoy does, by case-insensitive suffix:
// ".pb" binary proto, ".pb_text" text proto, ".yaml"/".yml" YAML, anything
// else JSON.
func LoadBytes(name string, data []byte) (*bootstrapv3.Bootstrap, error) {
	b, err := decode(name, data)
	if err != nil {
		return nil, err
	}
	if err := validateTree(b.ProtoReflect(), ""); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}

// JSON renders b as proto3 JSON with proto field names, resolving Any values
// through the registry this package populates (for /config_dump).
func JSON(b *bootstrapv3.Bootstrap) ([]byte, error) {
	return protojson.MarshalOptions{UseProtoNames: true, Resolver: protoregistry.GlobalTypes}.Marshal(b)
}

// Resolver returns the type resolver used to decode Any values: the global
// registry, populated with every Envoy extension proto by importing this package.
func Resolver() interface {
	protoregistry.ExtensionTypeResolver
	protoregistry.MessageTypeResolver
} {
	return protoregistry.GlobalTypes
}

func decode(name string, data []byte) (*bootstrapv3.Bootstrap, error) {
	lower := strings.ToLower(name)
	switch {
	case strings.HasSuffix(lower, ".pb"):
		b := &bootstrapv3.Bootstrap{}
		if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(data, b); err != nil {
			return nil, fmt.Errorf("%s: invalid binary proto: %s", name, reason(err))
		}
		if err := checkUnknown(b.ProtoReflect(), ""); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return b, nil
	case strings.HasSuffix(lower, ".pb_text"):
		b := &bootstrapv3.Bootstrap{}
		if err := (prototext.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(data, b); err != nil {
			if m := protojsonPos.FindStringSubmatch(err.Error()); m != nil {
				return nil, fmt.Errorf("%s:%s: %s", name, m[1], reason(err))
			}
			return nil, fmt.Errorf("%s: %s", name, reason(err))
		}
		return b, nil
	case strings.HasSuffix(lower, ".yaml"), strings.HasSuffix(lower, ".yml"):
		return decodeJSON(name, data, true)
	default:
		return decodeJSON(name, data, false)
	}
}

// yamlLine matches the position go-yaml puts in its messages.
var yamlLine = regexp.MustCompile(`(?:yaml: )?line (\d+): (.*)`)

// decodeJSON decodes YAML or JSON input, without validation.
func decodeJSON(name string, data []byte, isYAML bool) (*bootstrapv3.Bootstrap, error) {
	var tree any
	var err error
	if isYAML {
		if tree, err = parseYAML(data); err != nil {
			return nil, yamlError(name, err)
		}
	} else if tree, err = parseTree(data); err != nil {
		return nil, jsonError(name, data, err)
	}
	if _, ok := tree.(object); !ok {
		return nil, fmt.Errorf("%s: top-level value must be a mapping, not %s", name, kindOf(tree))
	}
	b := &bootstrapv3.Bootstrap{}
	md := b.ProtoReflect().Descriptor()
	norm, err := normalizeMessage(tree, md, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := unmarshalJSON.Unmarshal(encodeTree(norm), b); err != nil {
		if fe := locate(norm, md, ""); fe != nil {
			return nil, fmt.Errorf("%s: %w", name, fe)
		}
		return nil, fmt.Errorf("%s: %s", name, reason(err))
	}
	return b, nil
}

// yamlError makes a go-yaml error one line of the form "FILE:LINE: reason".
func yamlError(name string, err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: %s", name, m[1], oneLine(m[2]))
	}
	return fmt.Errorf("%s: %s", name, oneLine(strings.TrimPrefix(msg, "yaml: ")))
}

// jsonError makes a JSON syntax error one line naming the line of the input.
func jsonError(name string, js []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line := 1 + bytes.Count(js[:min(int(se.Offset), len(js))], []byte("\n"))
		return fmt.Errorf("%s:%s: %s", name, strconv.Itoa(line), oneLine(se.Error()))
	}
	return fmt.Errorf("%s: invalid JSON: %s", name, oneLine(err.Error()))
}

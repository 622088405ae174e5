package bootstrap

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	yaml "sigs.k8s.io/yaml/goyaml.v2"
)

// yamlDoc decodes a YAML document keeping mapping order (as yaml.MapSlice,
// which go-yaml then uses for every nested mapping too).
type yamlDoc struct{ v any }

func (d *yamlDoc) UnmarshalYAML(unmarshal func(any) error) error {
	var ms yaml.MapSlice
	if err := unmarshal(&ms); err == nil {
		d.v = ms
		return nil
	}
	return unmarshal(&d.v)
}

// parseYAML decodes YAML into the same ordered tree parseTree produces for
// JSON, with scalars typed as YAML 1.1 resolves them (as yaml-cpp does for
// Envoy: plain true/yes/on are booleans, quoted scalars are strings).
func parseYAML(data []byte) (any, error) {
	var d yamlDoc
	if err := yaml.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	return yamlToTree(d.v, 0)
}

func yamlToTree(v any, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nesting deeper than %d", maxDepth)
	}
	switch t := v.(type) {
	case nil, bool, string:
		return t, nil
	case int:
		return json.Number(strconv.Itoa(t)), nil
	case int64:
		return json.Number(strconv.FormatInt(t, 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(t, 10)), nil
	case float64:
		switch {
		case math.IsNaN(t):
			return "NaN", nil
		case math.IsInf(t, 1):
			return "Infinity", nil
		case math.IsInf(t, -1):
			return "-Infinity", nil
		}
		return json.Number(strconv.FormatFloat(t, 'g', -1, 64)), nil
	case []byte: // !!binary
		return base64.StdEncoding.EncodeToString(t), nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			c, err := yamlToTree(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case yaml.MapSlice:
		out := make(object, len(t))
		for i, item := range t {
			c, err := yamlToTree(item.Value, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = member{yamlKey(item.Key), c}
		}
		return out, nil
	case map[any]any: // only below a non-mapping top level
		out := make(object, 0, len(t))
		for k, e := range t {
			c, err := yamlToTree(e, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, member{yamlKey(k), c})
		}
		return out, nil
	}
	return fmt.Sprint(v), nil
}

func yamlKey(k any) string {
	if s, ok := k.(string); ok {
		return s
	}
	if k == nil {
		return "null"
	}
	return fmt.Sprint(k)
}

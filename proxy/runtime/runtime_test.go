package runtime

import (
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func layered(t *testing.T, js string) *bootstrapv3.LayeredRuntime {
	t.Helper()
	lr := &bootstrapv3.LayeredRuntime{}
	if err := protojson.Unmarshal([]byte(js), lr); err != nil {
		t.Fatal(err)
	}
	return lr
}

func TestFlattenEntries(t *testing.T) {
	vals, err := Flatten(mustStruct(t, map[string]any{
		"a":    map[string]any{"b": map[string]any{"c": "7"}},
		"num":  100.0,
		"half": 0.5,
		"neg":  -3.0,
		"on":   true,
		"word": "FALSE",
		"frac": map[string]any{"numerator": 5.0, "denominator": "TEN_THOUSAND"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key                        string
		raw                        string
		uint                       uint64
		hasUint, hasDouble, hasBoo bool
		boolean                    bool
	}{
		{key: "a.b.c", raw: "7", uint: 7, hasUint: true, hasDouble: true, hasBoo: true, boolean: true},
		{key: "num", raw: "100", uint: 100, hasUint: true, hasDouble: true, hasBoo: true, boolean: true},
		{key: "half", raw: "0.5", hasDouble: true},
		{key: "neg", raw: "-3", hasDouble: true},
		{key: "on", raw: "true", hasBoo: true, boolean: true},
		{key: "word", raw: "FALSE", hasBoo: true, boolean: false},
	}
	for _, tc := range tests {
		e, ok := vals[tc.key]
		if !ok {
			t.Errorf("%s: missing (keys %v)", tc.key, vals)
			continue
		}
		if e.Raw != tc.raw || e.HasUint != tc.hasUint || e.Uint != tc.uint || e.HasDouble != tc.hasDouble ||
			e.HasBool != tc.hasBoo || e.Bool != tc.boolean {
			t.Errorf("%s: got %+v", tc.key, e)
		}
	}
	f := vals["frac"].Fraction
	if f.GetNumerator() != 5 || f.GetDenominator() != typev3.FractionalPercent_TEN_THOUSAND {
		t.Errorf("frac: got %v", f)
	}
	if _, err := Flatten(mustStruct(t, map[string]any{"l": []any{1.0}})); err == nil || !strings.Contains(err.Error(), `"l"`) {
		t.Errorf("a list: got %v, want an error naming the key", err)
	}
}

func TestFeatureEnabled(t *testing.T) {
	l, err := New(layered(t, `{"layers":[{"name":"s","static_layer":{
		"pct": 30, "big": 500, "frac": {"numerator": 1, "denominator": "TEN_THOUSAND"}, "text": "x"}}]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := l.Snapshot()
	def := &typev3.FractionalPercent{Numerator: 50, Denominator: typev3.FractionalPercent_HUNDRED}
	tests := []struct {
		key  string
		rnd  uint64
		want bool
	}{
		{"pct", 29, true}, {"pct", 30, false}, {"pct", 129, true}, // integer: a percentage
		{"big", 99, true},                     // above 100: always
		{"frac", 0, true}, {"frac", 1, false}, // its own denominator
		{"text", 49, true}, {"text", 50, false}, // not a number: the default
		{"absent", 49, true}, {"absent", 50, false},
		{"", 10, true},
	}
	for _, tc := range tests {
		if got := s.FeatureEnabled(tc.key, def, tc.rnd); got != tc.want {
			t.Errorf("FeatureEnabled(%q, 50%%, %d) = %v, want %v", tc.key, tc.rnd, got, tc.want)
		}
	}
	var nilSnap *Snapshot
	if !nilSnap.FeatureEnabled("pct", def, 10) || nilSnap.GetInteger("pct", 9) != 9 {
		t.Error("a nil snapshot must read as empty")
	}
}

func TestLayersOverrideAndStats(t *testing.T) {
	st := stats.NewStore()
	l, err := New(layered(t, `{"layers":[
		{"name":"base","static_layer":{"a":"1","b":"2"}},
		{"name":"rtds","rtds_layer":{"name":"rt","rtds_config":{"ads":{}}}},
		{"name":"admin","admin_layer":{}}]}`), st)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.RTDSLayers(); len(got) != 1 || got[0].Layer != "rtds" || got[0].Resource != "rt" {
		t.Fatalf("RTDSLayers = %+v", got)
	}
	if err := l.SetRTDS("rtds", mustStruct(t, map[string]any{"b": "20", "c": 3.0})); err != nil {
		t.Fatal(err)
	}
	if err := l.Modify(map[string]string{"a": "100"}); err != nil {
		t.Fatal(err)
	}
	s := l.Snapshot()
	for k, want := range map[string]uint64{"a": 100, "b": 20, "c": 3} {
		if got := s.GetInteger(k, 0); got != want {
			t.Errorf("%s = %d, want %d", k, got, want)
		}
	}
	gauge := func(name string) int64 { return st.Root().Gauge(name).Value() }
	if gauge("runtime.num_keys") != 3 || gauge("runtime.num_layers") != 3 || gauge("runtime.admin_overrides_active") != 1 {
		t.Errorf("gauges: num_keys %d num_layers %d admin_overrides_active %d", gauge("runtime.num_keys"),
			gauge("runtime.num_layers"), gauge("runtime.admin_overrides_active"))
	}
	if got := st.Root().Counter("runtime.load_success").Value(); got != 3 {
		t.Errorf("load_success = %d, want 3 (load, RTDS, admin)", got)
	}
	// Removing the override and the RTDS layer falls back to the lower layers.
	if err := l.Modify(map[string]string{"a": ""}); err != nil {
		t.Fatal(err)
	}
	if err := l.SetRTDS("rtds", nil); err != nil {
		t.Fatal(err)
	}
	s2 := l.Snapshot()
	if s2.GetInteger("a", 0) != 1 || s2.GetInteger("b", 0) != 2 || s2.GetInteger("c", 0) != 0 {
		t.Errorf("after removal: a=%d b=%d c=%d", s2.GetInteger("a", 0), s2.GetInteger("b", 0), s2.GetInteger("c", 0))
	}
	if s.GetInteger("a", 0) != 100 {
		t.Error("an old snapshot changed: snapshots must be immutable")
	}
	if gauge("runtime.admin_overrides_active") != 0 {
		t.Error("admin_overrides_active stays 1 after the last override went")
	}
	// An invalid RTDS layer is refused and counted; the layer keeps its values.
	if err := l.SetRTDS("rtds", mustStruct(t, map[string]any{"x": nil})); err == nil {
		t.Error("a null value was accepted")
	}
	if st.Root().Counter("runtime.load_error").Value() != 1 {
		t.Error("load_error not counted")
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct{ js, want string }{
		{`{"layers":[{"name":"d","disk_layer":{"symlink_root":"/x"}}]}`, "layers[0].disk_layer: disk runtime layers are not supported"},
		{`{"layers":[{"name":"a","admin_layer":{}},{"name":"b","admin_layer":{}}]}`, "layers[1].admin_layer: too many admin layers"},
		{`{"layers":[{"name":"a","static_layer":{}},{"name":"a","admin_layer":{}}]}`, `layers[1].name: duplicate layer name "a"`},
		{`{"layers":[{"name":"a","static_layer":{"k":[1]}}]}`, "layers[0].static_layer: runtime key \"k\""},
	}
	for _, tc := range tests {
		_, err := New(layered(t, tc.js), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.js, err, tc.want)
		}
	}
}

func TestDefaultLayersAndProcess(t *testing.T) {
	none, err := New(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if none.HasAdminLayer() || len(none.Snapshot().Layers()) != 0 {
		t.Errorf("without layered_runtime: layers %+v, want none", none.Snapshot().Layers())
	}
	l, err := New(&bootstrapv3.LayeredRuntime{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !l.HasAdminLayer() || len(l.Snapshot().Layers()) != 1 {
		t.Fatalf("layered_runtime without layers: layers %+v, want one admin layer", l.Snapshot().Layers())
	}
	if err := l.Modify(map[string]string{"k": "5"}); err != nil {
		t.Fatal(err)
	}
	SetProcess(l)
	if Process().GetInteger("k", 0) != 5 {
		t.Error("Process does not read the process runtime")
	}
	other, _ := New(nil, nil)
	ClearProcess(other) // not the current one: no effect
	if Process() == nil {
		t.Error("ClearProcess cleared another loader's runtime")
	}
	ClearProcess(l)
	if Process() != nil {
		t.Error("ClearProcess left the runtime")
	}
	noAdmin, _ := New(layered(t, `{"layers":[{"name":"s","static_layer":{}}]}`), nil)
	if err := noAdmin.Modify(map[string]string{"k": "1"}); err != ErrNoAdminLayer {
		t.Errorf("Modify without an admin layer: %v", err)
	}
}

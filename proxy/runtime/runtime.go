// Package runtime is Envoy's layered runtime: static, admin and RTDS layers (bootstrap layered_runtime)
// merged into an immutable Snapshot that a Loader swaps atomically whenever a layer changes. Readers
// (route runtime_fraction, filters) load the current Snapshot once and never wait on an update.
package runtime

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Entry is one runtime value: its raw text and the typed readings Envoy derives from it.
type Entry struct {
	// Raw is the value as /runtime prints it.
	Raw string
	// Uint is set (HasUint) when the value is a non-negative integer.
	Uint    uint64
	HasUint bool
	// Double is set (HasDouble) when the value is a number.
	Double    float64
	HasDouble bool
	// Bool is set (HasBool) for true/false and for integers (non-zero is true).
	Bool    bool
	HasBool bool
	// Fraction is set for a {numerator, denominator} value; nil otherwise.
	Fraction *typev3.FractionalPercent
}

// Layer is one named layer's values.
type Layer struct {
	Name   string
	Values map[string]Entry
}

// Snapshot is the merged view of every layer at one moment. It is immutable; a nil *Snapshot reads
// as empty.
type Snapshot struct {
	values map[string]Entry
	layers []Layer
}

// Get returns the raw value of key.
func (s *Snapshot) Get(key string) (string, bool) {
	if s == nil {
		return "", false
	}
	e, ok := s.values[key]
	return e.Raw, ok
}

// Entry returns key's entry.
func (s *Snapshot) Entry(key string) (Entry, bool) {
	if s == nil {
		return Entry{}, false
	}
	e, ok := s.values[key]
	return e, ok
}

// GetInteger is key's integer value, or def when it is absent or not a non-negative integer.
func (s *Snapshot) GetInteger(key string, def uint64) uint64 {
	if e, ok := s.Entry(key); ok && e.HasUint {
		return e.Uint
	}
	return def
}

// GetDouble is key's numeric value, or def.
func (s *Snapshot) GetDouble(key string, def float64) float64 {
	if e, ok := s.Entry(key); ok && e.HasDouble {
		return e.Double
	}
	return def
}

// GetBool is key's boolean value, or def.
func (s *Snapshot) GetBool(key string, def bool) bool {
	if e, ok := s.Entry(key); ok && e.HasBool {
		return e.Bool
	}
	return def
}

// FeatureEnabled is Envoy's featureEnabled(key, FractionalPercent default, random): the fraction is
// key's {numerator, denominator} value, or its integer value as a percentage (above 100 is always
// on), or def; the feature is on when random % denominator < numerator.
func (s *Snapshot) FeatureEnabled(key string, def *typev3.FractionalPercent, random uint64) bool {
	num, den := uint64(def.GetNumerator()), Denominator(def.GetDenominator())
	if e, ok := s.Entry(key); ok && key != "" {
		switch {
		case e.Fraction != nil:
			num, den = uint64(e.Fraction.GetNumerator()), Denominator(e.Fraction.GetDenominator())
		case e.HasUint:
			if e.Uint > 100 {
				return true
			}
			num, den = e.Uint, 100
		}
	}
	return random%den < num
}

// Denominator is the value of a FractionalPercent denominator (100 for an unknown one).
func Denominator(d typev3.FractionalPercent_DenominatorType) uint64 {
	switch d {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return 10000
	case typev3.FractionalPercent_MILLION:
		return 1000000
	}
	return 100
}

// Keys are the snapshot's keys, sorted.
func (s *Snapshot) Keys() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.values))
	for k := range s.values {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Layers are the layers, lowest first, as the snapshot merged them.
func (s *Snapshot) Layers() []Layer {
	if s == nil {
		return nil
	}
	return s.layers
}

// layerKind is what feeds a layer.
type layerKind int

const (
	staticLayer layerKind = iota
	adminLayer
	rtdsLayer
)

// RTDSLayer is a layer fed by RTDS: the Runtime resource name and where to subscribe.
type RTDSLayer struct {
	// Layer is the layer's name; Resource the Runtime resource subscribed (rtds_layer.name).
	Layer, Resource string
	// Source is rtds_config.
	Source *corev3.ConfigSource
}

type layerState struct {
	name   string
	kind   layerKind
	values map[string]Entry
}

// Loader holds the layers and the current snapshot.
type Loader struct {
	mu     sync.Mutex // serialises layer changes
	layers []*layerState
	admin  *layerState // nil without an admin layer
	rtds   []RTDSLayer
	cur    atomic.Pointer[Snapshot]

	loadSuccess, loadError             *stats.Counter
	numKeys, numLayers, adminOverrides *stats.Gauge
}

// New compiles layered_runtime: nil means no layers (no admin layer either, as Envoy without
// layered_runtime), an empty one a single unnamed admin layer. Disk layers are refused. st receives runtime.load_success, runtime.load_error,
// runtime.num_keys, runtime.num_layers and runtime.admin_overrides_active; nil means a private store.
func New(cfg *bootstrapv3.LayeredRuntime, st *stats.Store) (*Loader, error) {
	if st == nil {
		st = stats.NewStore()
	}
	sc := st.Scope("runtime")
	l := &Loader{
		loadSuccess: sc.Counter("load_success"), loadError: sc.Counter("load_error"),
		numKeys: sc.Gauge("num_keys"), numLayers: sc.Gauge("num_layers"), adminOverrides: sc.Gauge("admin_overrides_active"),
	}
	if cfg != nil && len(cfg.GetLayers()) == 0 {
		// As Envoy: a layered_runtime without layers gets one (unnamed) admin layer.
		cfg = &bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{
			{LayerSpecifier: &bootstrapv3.RuntimeLayer_AdminLayer_{AdminLayer: &bootstrapv3.RuntimeLayer_AdminLayer{}}},
		}}
	}
	seen := map[string]bool{}
	for i, ly := range cfg.GetLayers() {
		path := fmt.Sprintf("layered_runtime.layers[%d]", i)
		if seen[ly.GetName()] {
			return nil, fmt.Errorf("%s.name: duplicate layer name %q", path, ly.GetName())
		}
		seen[ly.GetName()] = true
		ls := &layerState{name: ly.GetName(), values: map[string]Entry{}}
		switch s := ly.GetLayerSpecifier().(type) {
		case *bootstrapv3.RuntimeLayer_StaticLayer:
			ls.kind = staticLayer
			vals, err := Flatten(s.StaticLayer)
			if err != nil {
				return nil, fmt.Errorf("%s.static_layer: %w", path, err)
			}
			ls.values = vals
		case *bootstrapv3.RuntimeLayer_AdminLayer_:
			if l.admin != nil {
				return nil, fmt.Errorf("%s.admin_layer: too many admin layers specified", path)
			}
			ls.kind = adminLayer
			l.admin = ls
		case *bootstrapv3.RuntimeLayer_RtdsLayer_:
			ls.kind = rtdsLayer
			r := s.RtdsLayer
			if r.GetRtdsConfig() == nil {
				return nil, fmt.Errorf("%s.rtds_layer.rtds_config: required", path)
			}
			l.rtds = append(l.rtds, RTDSLayer{Layer: ly.GetName(), Resource: r.GetName(), Source: r.GetRtdsConfig()})
		case *bootstrapv3.RuntimeLayer_DiskLayer_:
			return nil, fmt.Errorf("%s.disk_layer: disk runtime layers are not supported by outrider yet", path)
		default:
			return nil, fmt.Errorf("%s: layer_specifier: required", path)
		}
		l.layers = append(l.layers, ls)
	}
	l.rebuild()
	return l, nil
}

// Snapshot is the current snapshot; never nil.
func (l *Loader) Snapshot() *Snapshot { return l.cur.Load() }

// RTDSLayers are the layers to subscribe over RTDS, in layer order.
func (l *Loader) RTDSLayers() []RTDSLayer { return slices.Clone(l.rtds) }

// HasAdminLayer reports whether /runtime_modify has a layer to write.
func (l *Loader) HasAdminLayer() bool { return l.admin != nil }

// SetRTDS replaces the values of the RTDS layer named layer with a Runtime resource's layer; nil
// empties it (the resource was removed). An invalid value leaves the layer as it was.
func (l *Loader) SetRTDS(layer string, values *structpb.Struct) error {
	vals, err := Flatten(values)
	if err != nil {
		l.loadError.Inc()
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ls := range l.layers {
		if ls.kind == rtdsLayer && ls.name == layer {
			ls.values = vals
			l.rebuild()
			return nil
		}
	}
	return fmt.Errorf("no RTDS layer %q", layer)
}

// ErrNoAdminLayer is Modify's error when layered_runtime has no admin layer.
var ErrNoAdminLayer = errors.New("no admin layer specified")

// Modify sets admin-layer values as /runtime_modify does; an empty value removes the key.
func (l *Loader) Modify(kv map[string]string) error {
	if l.admin == nil {
		return ErrNoAdminLayer
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	vals := make(map[string]Entry, len(l.admin.values)+len(kv))
	for k, v := range l.admin.values {
		vals[k] = v
	}
	for k, v := range kv {
		if v == "" {
			delete(vals, k)
			continue
		}
		vals[k] = stringEntry(v)
	}
	l.admin.values = vals
	l.rebuild()
	return nil
}

// rebuild merges the layers into a new snapshot and swaps it in. Called with mu held (or before the
// Loader is shared).
func (l *Loader) rebuild() {
	s := &Snapshot{values: map[string]Entry{}}
	for _, ls := range l.layers {
		for k, v := range ls.values {
			s.values[k] = v
		}
		s.layers = append(s.layers, Layer{Name: ls.name, Values: ls.values})
	}
	l.cur.Store(s)
	l.loadSuccess.Inc()
	l.numKeys.Set(int64(len(s.values)))
	l.numLayers.Set(int64(len(l.layers)))
	if l.admin != nil && len(l.admin.values) > 0 {
		l.adminOverrides.Set(1)
	} else {
		l.adminOverrides.Set(0)
	}
}

// Flatten turns a layer's Struct into entries: nested structs join their keys with ".", except a
// struct with numerator or denominator, which is a FractionalPercent value. Lists and nulls are
// refused, as Envoy refuses them.
func Flatten(s *structpb.Struct) (map[string]Entry, error) {
	out := map[string]Entry{}
	for k, v := range s.GetFields() {
		if err := walk(out, k, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func walk(out map[string]Entry, key string, v *structpb.Value) error {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		f := k.StructValue.GetFields()
		_, num := f["numerator"]
		_, den := f["denominator"]
		if num || den || len(f) == 0 {
			e, err := fractionEntry(k.StructValue)
			if err != nil {
				return fmt.Errorf("runtime key %q: %w", key, err)
			}
			out[key] = e
			return nil
		}
		for sub, sv := range f {
			if err := walk(out, key+"."+sub, sv); err != nil {
				return err
			}
		}
		return nil
	case *structpb.Value_StringValue:
		out[key] = stringEntry(k.StringValue)
	case *structpb.Value_NumberValue:
		out[key] = numberEntry(k.NumberValue)
	case *structpb.Value_BoolValue:
		out[key] = Entry{Raw: strconv.FormatBool(k.BoolValue), Bool: k.BoolValue, HasBool: true}
	default:
		return fmt.Errorf("runtime key %q: invalid runtime entry value (%T)", key, v.GetKind())
	}
	return nil
}

func numberEntry(n float64) Entry {
	e := Entry{Raw: strconv.FormatFloat(n, 'f', -1, 64), Double: n, HasDouble: true}
	if n >= 0 && n == math.Trunc(n) && n < math.MaxUint64 {
		e.Uint, e.HasUint = uint64(n), true
		e.Bool, e.HasBool = n != 0, true
	}
	return e
}

// stringEntry reads a string as Envoy does: an integer, a number, or true/false.
func stringEntry(s string) Entry {
	e := Entry{Raw: s}
	t := strings.TrimSpace(s)
	if u, err := strconv.ParseUint(t, 10, 64); err == nil {
		e.Uint, e.HasUint = u, true
		e.Bool, e.HasBool = u != 0, true
	}
	if d, err := strconv.ParseFloat(t, 64); err == nil {
		e.Double, e.HasDouble = d, true
	}
	switch strings.ToLower(t) {
	case "true":
		e.Bool, e.HasBool = true, true
	case "false":
		e.Bool, e.HasBool = false, true
	}
	return e
}

func fractionEntry(s *structpb.Struct) (Entry, error) {
	f := &typev3.FractionalPercent{}
	for k, v := range s.GetFields() {
		switch k {
		case "numerator":
			n := v.GetNumberValue()
			if n < 0 || n != math.Trunc(n) || n > math.MaxUint32 {
				return Entry{}, fmt.Errorf("numerator: %v is not a uint32", n)
			}
			f.Numerator = uint32(n)
		case "denominator":
			d, ok := typev3.FractionalPercent_DenominatorType_value[v.GetStringValue()]
			if !ok {
				return Entry{}, fmt.Errorf("denominator: unknown value %q", v.GetStringValue())
			}
			f.Denominator = typev3.FractionalPercent_DenominatorType(d)
		default:
			return Entry{}, fmt.Errorf("unknown FractionalPercent field %q", k)
		}
	}
	raw := fmt.Sprintf("numerator: %d\ndenominator: %s\n", f.GetNumerator(), f.GetDenominator())
	return Entry{Raw: raw, Fraction: f}, nil
}

// process is the runtime of the running server, for readers without a Loader at hand.
var process atomic.Pointer[Loader]

// SetProcess makes l the process-wide runtime (Envoy's runtime is a server singleton); nil clears it.
func SetProcess(l *Loader) { process.Store(l) }

// Process is the process-wide runtime's current snapshot; nil (which reads as empty) when there is none.
func Process() *Snapshot {
	if l := process.Load(); l != nil {
		return l.Snapshot()
	}
	return nil
}

// ClearProcess clears the process-wide runtime if it is still l (a server shutting down).
func ClearProcess(l *Loader) { process.CompareAndSwap(l, nil) }

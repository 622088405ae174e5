// Package registry finds extension factories by their Envoy name and by the
// type URL of their config. One Registry exists per extension kind (listener
// filter, network filter, HTTP filter, cluster type, ...); extensions add
// themselves from init() and a duplicate name or type URL panics at start-up.
//
// Lifecycle of an extension, the same for every kind: the config loader finds
// its factory here (by typed_config type URL first, then by name); the factory
// decodes and validates the config once into an immutable object, returning an
// error that names the field (so a bootstrap fails and xDS can NACK); that
// object then makes one filter per connection or stream; nothing is shared
// mutable between connections except what the extension guards itself.
package registry

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Registry maps Envoy extension names and config type URLs to factories of type F.
type Registry[F any] struct {
	kind string

	mu      sync.RWMutex
	byName  map[string]F
	byType  map[string]F
	aliases map[string]string // name -> canonical name, for deprecated names
}

// New returns an empty registry for extensions of the given kind, which names
// them in errors ("HTTP filter", "network filter", ...).
func New[F any](kind string) *Registry[F] {
	return &Registry[F]{kind: kind, byName: map[string]F{}, byType: map[string]F{}, aliases: map[string]string{}}
}

// Kind is the extension kind the registry holds.
func (r *Registry[F]) Kind() string { return r.kind }

// Register adds f under name and each config type URL (with or without the
// "type.googleapis.com/" prefix). It panics when a name or type is taken.
func (r *Registry[F]) Register(name string, typeURLs []string, f F) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.byName[name]; dup {
		panic(fmt.Sprintf("registry: %s %q registered twice", r.kind, name))
	}
	r.byName[name] = f
	for _, t := range typeURLs {
		t = TrimTypeURL(t)
		if _, dup := r.byType[t]; dup {
			panic(fmt.Sprintf("registry: %s config type %q registered twice", r.kind, t))
		}
		r.byType[t] = f
	}
}

// Alias makes old (a deprecated Envoy name) resolve to name.
func (r *Registry[F]) Alias(old, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.aliases[old]; dup {
		panic(fmt.Sprintf("registry: %s alias %q registered twice", r.kind, old))
	}
	r.aliases[old] = name
}

// Lookup finds a factory, preferring the typed config's type URL as Envoy
// does, then the name. The error names the extension and says it is not
// supported.
func (r *Registry[F]) Lookup(name, typeURL string) (F, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if typeURL != "" {
		if f, ok := r.byType[TrimTypeURL(typeURL)]; ok {
			return f, nil
		}
	}
	n := name
	if a, ok := r.aliases[n]; ok {
		n = a
	}
	if f, ok := r.byName[n]; ok && typeURL == "" {
		return f, nil
	}
	var zero F
	if typeURL != "" {
		return zero, fmt.Errorf("unsupported %s %q (config type %s)", r.kind, name, TrimTypeURL(typeURL))
	}
	return zero, fmt.Errorf("unsupported %s %q", r.kind, name)
}

// Names lists the registered names, sorted.
func (r *Registry[F]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byName))
	for n := range r.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// TrimTypeURL drops the "type.googleapis.com/" (or any host) prefix.
func TrimTypeURL(t string) string {
	if i := strings.LastIndexByte(t, '/'); i >= 0 {
		return t[i+1:]
	}
	return t
}

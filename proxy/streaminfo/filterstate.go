package streaminfo

// FilterStateObject is a value a filter keeps in a stream's or a
// connection's filter state under a name, as Envoy's
// StreamInfo::FilterState::Object. String returns its serialized form for
// access logs and %FILTER_STATE%; ok is false when it has none.
type FilterStateObject interface {
	String() (s string, ok bool)
}

// Hashable is a filter-state object that route hash policies
// (hash_policy.filter_state) can hash, as Envoy's Hashable: ok false means
// it gives no hash for this request.
type Hashable interface {
	Hash() (h uint64, ok bool)
}

// StringObject is Envoy's StringAccessor: a plain string in filter state.
// It serializes as itself; hash policies hash it with xxHash64 (seed 0), as
// Envoy's StringAccessorImpl does.
type StringObject string

// String implements FilterStateObject.
func (s StringObject) String() (string, bool) { return string(s), true }

// FilterState is a set of named filter-state objects. The zero value is
// empty and ready to use; a nil *FilterState reads as empty. One goroutine
// (the stream's or the connection's owner) writes it at a time.
type FilterState struct {
	objs map[string]FilterStateObject
}

// Set stores obj under name, replacing any earlier object; a nil obj
// removes the name.
func (fs *FilterState) Set(name string, obj FilterStateObject) {
	if obj == nil {
		delete(fs.objs, name)
		return
	}
	if fs.objs == nil {
		fs.objs = make(map[string]FilterStateObject, 2)
	}
	fs.objs[name] = obj
}

// Get returns the object stored under name, or nil.
func (fs *FilterState) Get(name string) FilterStateObject {
	if fs == nil {
		return nil
	}
	return fs.objs[name]
}

// Len is the number of objects.
func (fs *FilterState) Len() int {
	if fs == nil {
		return 0
	}
	return len(fs.objs)
}

// Clear removes every object, keeping the map's storage for reuse.
func (fs *FilterState) Clear() {
	if fs != nil {
		clear(fs.objs)
	}
}

// FilterStateObject returns the object named name from the stream's filter
// state, else from its connection's (Envoy's connection-lifespan objects
// are visible to every stream of the connection), else nil.
func (s *Stream) FilterStateObject(name string) FilterStateObject {
	if o := s.FilterState.Get(name); o != nil {
		return o
	}
	if s.Conn != nil {
		return s.Conn.FilterState.Get(name)
	}
	return nil
}

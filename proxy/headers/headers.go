// Package headers is the proxy's header map, shared by every codec, filter and
// the router. Names are stored lower-case; values reference the bytes they were
// parsed from, and strings added by filters are copied into the map's own arena,
// so a reused Map allocates nothing on the common path.
//
// Request pseudo-headers are kept as fields the way Envoy keeps them, whatever
// the protocol: ":method", ":path", ":authority" (HTTP/1 Host), ":scheme"; a
// response has ":status". Codecs translate on the wire.
package headers

import "strconv"

// Field is one header. Name is lower-case. Both slices may point into a
// pooled read buffer: they are valid only while the Map's owner holds it.
type Field struct {
	Name  []byte
	Value []byte
}

// Pseudo-header names.
const (
	Method    = ":method"
	Path      = ":path"
	Authority = ":authority"
	Scheme    = ":scheme"
	Status    = ":status"
	Protocol  = ":protocol"
)

// Map is an ordered multi-map of header fields. The zero Map is empty and ready
// to use. A Map is owned by one goroutine at a time.
type Map struct {
	fields []Field
	arena  []byte // backing store for names and values added from strings
}

// Reset empties the map, keeping its capacity. Slices handed out before are
// no longer valid.
func (m *Map) Reset() {
	clear(m.fields)
	m.fields = m.fields[:0]
	m.arena = m.arena[:0]
}

// Len is the number of fields.
func (m *Map) Len() int { return len(m.fields) }

// At returns the i'th field.
func (m *Map) At(i int) Field { return m.fields[i] }

// Fields exposes the fields in order. Callers must not keep the slice past
// the next change to the map.
func (m *Map) Fields() []Field { return m.fields }

// ByteSize is the sum of name and value lengths, as Envoy counts header size.
func (m *Map) ByteSize() int {
	n := 0
	for i := range m.fields {
		n += len(m.fields[i].Name) + len(m.fields[i].Value)
	}
	return n
}

// Get returns the first value for name (lower-case) and whether it exists.
func (m *Map) Get(name string) ([]byte, bool) {
	for i := range m.fields {
		if string(m.fields[i].Name) == name {
			return m.fields[i].Value, true
		}
	}
	return nil, false
}

// GetString is Get converted to a string ("" when absent). It allocates.
func (m *Map) GetString(name string) string {
	v, _ := m.Get(name)
	return string(v)
}

// Has reports whether name is present.
func (m *Map) Has(name string) bool {
	_, ok := m.Get(name)
	return ok
}

// Count is the number of fields named name.
func (m *Map) Count(name string) int {
	n := 0
	for i := range m.fields {
		if string(m.fields[i].Name) == name {
			n++
		}
	}
	return n
}

// Values calls fn for each value of name, in order, until fn returns false.
func (m *Map) Values(name string, fn func(v []byte) bool) {
	for i := range m.fields {
		if string(m.fields[i].Name) == name {
			if !fn(m.fields[i].Value) {
				return
			}
		}
	}
}

// AppendRef appends a field whose bytes the caller keeps alive (a parse
// buffer). name must already be lower-case.
func (m *Map) AppendRef(name, value []byte) {
	m.fields = append(m.fields, Field{Name: name, Value: value})
}

// Add appends name: value, copying both into the map's arena. name is
// lower-cased.
func (m *Map) Add(name, value string) {
	n := m.copyLower(name)
	v := m.copyIn(value)
	m.fields = append(m.fields, Field{Name: n, Value: v})
}

// AddBytes is Add for a byte-slice value.
func (m *Map) AddBytes(name string, value []byte) {
	n := m.copyLower(name)
	v := m.copyInBytes(value)
	m.fields = append(m.fields, Field{Name: n, Value: v})
}

// Set replaces every value of name with one value (appended when absent, or
// put in place of the first one).
func (m *Map) Set(name, value string) {
	v := m.copyIn(value)
	m.setBytesOwned(name, v)
}

// SetBytes is Set for a byte-slice value, which is copied.
func (m *Map) SetBytes(name string, value []byte) {
	v := m.copyInBytes(value)
	m.setBytesOwned(name, v)
}

// SetInt is Set for a decimal integer, without allocating.
func (m *Map) SetInt(name string, v int64) {
	start := len(m.arena)
	m.arena = strconv.AppendInt(m.arena, v, 10)
	m.setBytesOwned(name, m.arena[start:len(m.arena):len(m.arena)])
}

func (m *Map) setBytesOwned(name string, v []byte) {
	lname := lowerName(name)
	found := false
	j := 0
	for i := range m.fields {
		f := m.fields[i]
		if string(f.Name) == lname {
			if found {
				continue
			}
			found = true
			f.Value = v
		}
		m.fields[j] = f
		j++
	}
	clear(m.fields[j:])
	m.fields = m.fields[:j]
	if !found {
		m.fields = append(m.fields, Field{Name: m.copyIn(lname), Value: v})
	}
}

// Del removes every field named name and reports how many were removed.
func (m *Map) Del(name string) int {
	lname := lowerName(name)
	j := 0
	for i := range m.fields {
		if string(m.fields[i].Name) == lname {
			continue
		}
		m.fields[j] = m.fields[i]
		j++
	}
	n := len(m.fields) - j
	clear(m.fields[j:])
	m.fields = m.fields[:j]
	return n
}

// DelFunc removes every field for which drop returns true.
func (m *Map) DelFunc(drop func(f Field) bool) {
	j := 0
	for i := range m.fields {
		if drop(m.fields[i]) {
			continue
		}
		m.fields[j] = m.fields[i]
		j++
	}
	clear(m.fields[j:])
	m.fields = m.fields[:j]
}

// CopyFrom makes m a deep copy of src (m's own arena holds every byte).
func (m *Map) CopyFrom(src *Map) {
	m.Reset()
	for _, f := range src.fields {
		n := m.copyInBytes(f.Name)
		v := m.copyInBytes(f.Value)
		m.fields = append(m.fields, Field{Name: n, Value: v})
	}
}

// Clone returns a deep copy of m.
func (m *Map) Clone() *Map {
	c := &Map{}
	c.CopyFrom(m)
	return c
}

// copyIn copies s into the arena and returns a slice of it with its capacity
// capped, so later appends to the arena never write through it.
func (m *Map) copyIn(s string) []byte {
	start := len(m.arena)
	m.arena = append(m.arena, s...)
	return m.arena[start:len(m.arena):len(m.arena)]
}

func (m *Map) copyInBytes(b []byte) []byte {
	start := len(m.arena)
	m.arena = append(m.arena, b...)
	return m.arena[start:len(m.arena):len(m.arena)]
}

func (m *Map) copyLower(s string) []byte {
	start := len(m.arena)
	for i := 0; i < len(s); i++ {
		m.arena = append(m.arena, lower(s[i]))
	}
	return m.arena[start:len(m.arena):len(m.arena)]
}

// lowerName returns s if it is already lower-case (no allocation), else a
// lower-cased copy.
func lowerName(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lower(b[j])
			}
			return string(b)
		}
	}
	return s
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// EqualFold reports whether b equals s ignoring ASCII case, without allocating.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

// StatusCode parses ":status" as a three-digit code; 0 when it is absent or
// not a number.
func (m *Map) StatusCode() int {
	v, _ := m.Get(Status)
	if len(v) != 3 {
		return 0
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// IsGRPC reports whether a content-type is gRPC's: application/grpc, alone
// or followed by "+format" or parameters (case-insensitive).
func IsGRPC(ct []byte) bool {
	const p = "application/grpc"
	if len(ct) < len(p) || !EqualFold(ct[:len(p)], p) {
		return false
	}
	return len(ct) == len(p) || ct[len(p)] == '+' || ct[len(p)] == ';'
}

// AddCopy appends a field from byte slices, copying both into the arena.
// name must already be lower-case.
func (m *Map) AddCopy(name, value []byte) {
	n := m.copyInBytes(name)
	v := m.copyInBytes(value)
	m.fields = append(m.fields, Field{Name: n, Value: v})
}

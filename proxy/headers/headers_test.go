package headers

import "testing"

func TestMapOperations(t *testing.T) {
	var m Map
	m.AppendRef([]byte("host"), []byte("a"))
	m.Add("X-Multi", "1")
	m.Add("x-multi", "2")
	m.Set("X-One", "v")
	if v, ok := m.Get("x-multi"); !ok || string(v) != "1" {
		t.Errorf("Get x-multi = %q %v", v, ok)
	}
	if m.Count("x-multi") != 2 {
		t.Errorf("Count = %d", m.Count("x-multi"))
	}
	m.Set("x-multi", "3")
	if m.Count("x-multi") != 1 || m.GetString("x-multi") != "3" {
		t.Errorf("Set did not replace all values: %d %q", m.Count("x-multi"), m.GetString("x-multi"))
	}
	m.SetInt("x-n", 42)
	if m.GetString("x-n") != "42" {
		t.Errorf("SetInt = %q", m.GetString("x-n"))
	}
	if n := m.Del("X-ONE"); n != 1 || m.Has("x-one") {
		t.Errorf("Del = %d", n)
	}
	c := m.Clone()
	m.Reset()
	if m.Len() != 0 || c.GetString("host") != "a" || c.GetString("x-n") != "42" {
		t.Errorf("Clone not independent of Reset: %d %q", m.Len(), c.GetString("host"))
	}
	if !EqualFold([]byte("Content-Length"), "content-length") || EqualFold([]byte("a"), "b") {
		t.Error("EqualFold")
	}
}

// Values added from strings must not change when the arena grows.
func TestArenaGrowthKeepsValues(t *testing.T) {
	var m Map
	m.Add("first", "value")
	first, _ := m.Get("first")
	for i := 0; i < 1000; i++ {
		m.Add("k", "some longer value to grow the arena")
	}
	if string(first) != "value" {
		t.Fatalf("earlier value changed to %q", first)
	}
}

func TestReusedMapDoesNotAllocate(t *testing.T) {
	var m Map
	name, val := []byte("host"), []byte("example.com")
	fill := func() {
		m.Reset()
		m.AppendRef(name, val)
		m.Set("x-request-id", "0123456789abcdef")
		m.SetInt("x-envoy-upstream-service-time", 12)
		_, _ = m.Get("host")
	}
	fill()
	if n := testing.AllocsPerRun(100, fill); n != 0 {
		t.Fatalf("%v allocs per reuse, want 0", n)
	}
}

func TestStatusCode(t *testing.T) {
	for v, want := range map[string]int{"200": 200, "503": 503, "20": 0, "2x0": 0, "": 0} {
		var m Map
		if v != "" {
			m.Set(Status, v)
		}
		if got := m.StatusCode(); got != want {
			t.Errorf("StatusCode(%q) = %d, want %d", v, got, want)
		}
	}
}

func TestIsGRPC(t *testing.T) {
	for ct, want := range map[string]bool{"application/grpc": true, "application/grpc+proto": true, "Application/GRPC; charset=x": true,
		"application/grpc-web": false, "application/json": false, "": false} {
		if IsGRPC([]byte(ct)) != want {
			t.Errorf("IsGRPC(%q) != %v", ct, want)
		}
	}
}

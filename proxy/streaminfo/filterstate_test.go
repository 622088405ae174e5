package streaminfo

import (
	"net/netip"
	"testing"
	"time"
)

func TestFilterState(t *testing.T) {
	conn := &Conn{RemoteAddr: netip.MustParseAddrPort("10.0.0.1:1")}
	conn.FilterState.Set("shared", StringObject("conn"))
	conn.FilterState.Set("both", StringObject("conn"))
	var s Stream
	s.Reset(conn, time.Now())
	s.FilterState.Set("both", StringObject("stream"))
	s.FilterState.Set("mine", StringObject("stream"))
	tests := []struct {
		name, want string
		found      bool
	}{
		{"shared", "conn", true},
		{"both", "stream", true}, // the stream's own object hides the connection's
		{"mine", "stream", true},
		{"none", "", false},
	}
	for _, tt := range tests {
		o := s.FilterStateObject(tt.name)
		if (o != nil) != tt.found {
			t.Fatalf("%s: found %v", tt.name, o != nil)
		}
		if o != nil {
			if v, ok := o.String(); !ok || v != tt.want {
				t.Errorf("%s = %q, %v; want %q", tt.name, v, ok, tt.want)
			}
		}
	}
	s.FilterState.Set("mine", nil)
	if s.FilterStateObject("mine") != nil || s.FilterState.Len() != 1 {
		t.Errorf("after removing: len %d", s.FilterState.Len())
	}
	// The next stream on the connection starts empty but still sees the
	// connection's objects.
	s.Reset(conn, time.Now())
	if s.FilterState.Len() != 0 || s.FilterStateObject("both") == nil {
		t.Errorf("after Reset: len %d, both %v", s.FilterState.Len(), s.FilterStateObject("both"))
	}
	var nilFS *FilterState
	if nilFS.Get("x") != nil || nilFS.Len() != 0 {
		t.Error("nil FilterState is not empty")
	}
}

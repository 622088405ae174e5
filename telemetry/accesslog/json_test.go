package accesslog

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestJSONEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", `"plain"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"tab\there\nnl\r\b\f", `"tab\there\nnl\r\b\f"`},
		{"\x01\x1f", `"\u0001\u001f"`},
		{"héllo ✓", `"héllo ✓"`},
		{"bad\xffutf8", `"bad` + "\ufffd" + `utf8"`},
		{strings.Repeat(`"`, 100), `"` + strings.Repeat(`\"`, 100) + `"`},
	}
	for _, tt := range tests {
		// A prefix with spare capacity and one without exercise both the
		// in-place and the reallocating path.
		for _, pre := range [][]byte{[]byte("x:"), make([]byte, 2, 1024)} {
			got := appendJSONString(pre, []byte(tt.in))
			if string(got[2:]) != tt.want {
				t.Errorf("%q: got %s want %s", tt.in, got[2:], tt.want)
			}
			if !json.Valid(got[2:]) {
				t.Errorf("%q: invalid JSON %s", tt.in, got[2:])
			}
		}
	}
}

func TestJSONOutputIsValid(t *testing.T) {
	j, err := compileJSON(mustStruct(t, map[string]any{
		"ua":   "%REQ(USER-AGENT)%",
		"code": "%RESPONSE_CODE%",
		"n":    map[string]any{"l": []any{"%REQ(X-EVIL)%", 2.0}},
	}), true, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext()
	ctx.Request.Add("x-evil", "\"}\n{\x00\\")
	out := j.Append(nil, ctx)
	if !strings.HasSuffix(string(out), "\n") || !json.Valid(out[:len(out)-1]) {
		t.Fatalf("invalid: %q", out)
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	if got := v["n"].(map[string]any)["l"].([]any)[0]; got != "\"}\n{\x00\\" {
		t.Errorf("round trip: %q", got)
	}
	if v["code"] != 204.0 {
		t.Errorf("code: %v", v["code"])
	}
}

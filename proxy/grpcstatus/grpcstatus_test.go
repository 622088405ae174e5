package grpcstatus

import "testing"

func TestFromHTTP(t *testing.T) {
	for code, want := range map[int]int{400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14, 200: 2, 500: 2, 418: 2} {
		if got := FromHTTP(code); got != want {
			t.Errorf("FromHTTP(%d) = %d, want %d", code, got, want)
		}
	}
}

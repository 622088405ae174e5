package hcm

import (
	"net/http"
	"sync/atomic"
	"time"
)

// cachedDate is the Date header value, rebuilt at most once a second.
type cachedDate struct {
	unix  int64
	value []byte
}

var dateCache atomic.Pointer[cachedDate]

// dateHeader returns the current IMF-fixdate. It allocates once a second.
func dateHeader() []byte {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.unix == now.Unix() {
		return d.value
	}
	d := &cachedDate{unix: now.Unix(), value: now.UTC().AppendFormat(nil, http.TimeFormat)}
	dateCache.Store(d)
	return d.value
}

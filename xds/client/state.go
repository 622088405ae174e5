package client

import (
	"errors"
	"time"
	"unsafe"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// watchEntry is one Watch call; its pointer identifies it for cancel.
type watchEntry struct{ w Watcher }

// cacheEntry is a resource held by the client in wire form: decoded again only for a new watcher, so
// that the client holds a few hundred bytes per resource instead of the decoded message.
type cacheEntry struct {
	raw     string      // the Any's value bytes; also the entry's key in typeState.byRaw
	version string      // the resource's own version (delta); empty in SotW
	ttl     *time.Timer // nil without a TTL
}

// bytesOf views s as bytes without copying; the result must not be modified.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// fetchBatch is one initial fetch timer: the names (or wildcard) subscribed together.
type fetchBatch struct {
	names    []string
	wildcard bool
	timer    *time.Timer
}

// typeStats are Envoy's per-subscription stats.
type typeStats struct {
	attempt, success, rejected, failure, initFetchTimeout *stats.Counter
	updateTime                                            *stats.Gauge
	// updateDuration is the time from a response's arrival to its
	// acceptance: decoding, validation and the watchers' applying.
	updateDuration *stats.Histogram
}

func newTypeStats(s stats.Scope) *typeStats {
	return &typeStats{
		attempt:          s.Counter("update_attempt"),
		success:          s.Counter("update_success"),
		rejected:         s.Counter("update_rejected"),
		failure:          s.Counter("update_failure"),
		initFetchTimeout: s.Counter("init_fetch_timeout"),
		updateTime:       s.Gauge("update_time"),
		updateDuration:   s.Histogram("update_duration", stats.Milliseconds),
	}
}

// typeState is everything the client knows about one resource type. The loop goroutine owns it.
type typeState struct {
	rt       ResourceType
	url      string
	watchers []*watchEntry
	stats    *typeStats // nil without TypeStats

	// Subscription.
	wildcard bool
	names    map[string]bool

	// Resources held, with the last accepted SotW version and the nonce of the last response on the
	// current stream.
	cache   map[string]*cacheEntry
	byRaw   map[string]string // a cached resource's name by its wire bytes, to recognise it undecoded
	version string
	nonce   string

	// Delta: what the server was told on the current stream.
	sentWildcard bool
	sentNames    map[string]bool
	// sentOnStream is set once a request for the type went out on the current stream.
	sentOnStream bool

	// Initial fetch timeout bookkeeping: answered names (received or removed), names with a timer, the
	// timers, and whether any response arrived.
	answered        map[string]bool
	awaited         map[string]bool
	timedOut        map[string]bool // reported Missing; not waited for again while subscribed
	awaitedWildcard bool
	batches         map[*fetchBatch]struct{}
	gotResponse     bool
}

func newTypeState(rt ResourceType) *typeState {
	return &typeState{
		rt: rt, url: rt.TypeURL(),
		names:     map[string]bool{},
		cache:     map[string]*cacheEntry{},
		byRaw:     map[string]string{},
		sentNames: map[string]bool{},
		answered:  map[string]bool{},
		awaited:   map[string]bool{},
		timedOut:  map[string]bool{},
		batches:   map[*fetchBatch]struct{}{},
	}
}

// subscribed reports whether the type's subscription covers name.
func (ts *typeState) subscribed(name string) bool { return ts.wildcard || ts.names[name] }

// setNames replaces the subscription and forgets resources it no longer covers.
func (ts *typeState) setNames(names []string, wildcard bool) {
	ts.wildcard = wildcard
	ts.names = make(map[string]bool, len(names))
	for _, n := range names {
		ts.names[n] = true
	}
	for n := range ts.cache {
		if !ts.subscribed(n) {
			ts.drop(n)
		}
	}
	for n := range ts.answered {
		if !ts.names[n] {
			delete(ts.answered, n)
		}
	}
	for n := range ts.timedOut {
		if !ts.names[n] {
			delete(ts.timedOut, n)
		}
	}
}

// forget drops the resources and versions of a type no longer watched on a stream that stops.
func (ts *typeState) forget() {
	ts.stopTimers()
	ts.cache = map[string]*cacheEntry{}
	ts.byRaw = map[string]string{}
	ts.version, ts.nonce = "", ""
	ts.answered = map[string]bool{}
	ts.timedOut = map[string]bool{}
	ts.gotResponse = false
	ts.resetStream()
}

// resetStream clears what belongs to one stream.
func (ts *typeState) resetStream() {
	ts.nonce = ""
	ts.sentWildcard = false
	ts.sentNames = map[string]bool{}
	ts.sentOnStream = false
}

func (ts *typeState) stopTimers() {
	for b := range ts.batches {
		b.timer.Stop()
	}
	ts.batches = map[*fetchBatch]struct{}{}
	ts.awaited = map[string]bool{}
	ts.awaitedWildcard = false
	for _, ce := range ts.cache {
		if ce.ttl != nil {
			ce.ttl.Stop()
			ce.ttl = nil
		}
	}
}

// put caches a resource's wire bytes under name, keeping the entry (and its TTL timer) if there is one.
func (ts *typeState) put(name, raw, version string) *cacheEntry {
	ce := ts.cache[name]
	if ce == nil {
		ce = &cacheEntry{}
		ts.cache[name] = ce
	} else if ts.byRaw[ce.raw] == name {
		delete(ts.byRaw, ce.raw)
	}
	ce.raw, ce.version = raw, version
	ts.byRaw[raw] = name
	return ce
}

// drop forgets a cached resource and stops its TTL timer.
func (ts *typeState) drop(name string) {
	ce := ts.cache[name]
	if ce == nil {
		return
	}
	if ce.ttl != nil {
		ce.ttl.Stop()
		ce.ttl = nil
	}
	if ts.byRaw[ce.raw] == name {
		delete(ts.byRaw, ce.raw)
	}
	delete(ts.cache, name)
}

// decode decodes a cached resource again (for a new watcher).
func (ts *typeState) decode(ce *cacheEntry) (Resource, error) {
	_, msg, err := ts.rt.Decode(&anypb.Any{TypeUrl: ts.url, Value: bytesOf(ce.raw)})
	return Resource{Msg: msg, Version: ce.version, Raw: ce.raw}, err
}

// notify calls every watcher in order and joins their errors.
func (ts *typeState) notify(u Update) error {
	var errs []error
	for _, e := range append([]*watchEntry(nil), ts.watchers...) {
		if err := e.w.OnUpdate(ts.url, u); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// answer records that the server answered about names, ending their initial fetch wait.
func (ts *typeState) answer(names ...string) {
	ts.gotResponse = true
	for _, n := range names {
		if !ts.answered[n] && ts.names[n] {
			ts.answered[n] = true
		}
	}
	for b := range ts.batches {
		done := true // a wildcard batch ends with any response
		for _, n := range b.names {
			if ts.names[n] && !ts.answered[n] {
				done = false
				break
			}
		}
		if done {
			b.timer.Stop()
			delete(ts.batches, b)
			for _, n := range b.names {
				delete(ts.awaited, n)
			}
			if b.wildcard {
				ts.awaitedWildcard = false
			}
		}
	}
}

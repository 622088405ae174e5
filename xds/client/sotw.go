package client

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// onResponse handles one response read from ls.
func (c *Client) onResponse(ls *liveStream, m proto.Message) {
	if ls.s.live != ls {
		return // the stream was replaced or stopped meanwhile
	}
	switch r := m.(type) {
	case *discoveryv3.DiscoveryResponse:
		c.onSotW(ls, r)
	case *discoveryv3.DeltaDiscoveryResponse:
		c.onDelta(ls, r)
	}
}

// nodeFor returns the node for the next request on ls.
func (c *Client) nodeFor(ls *liveStream) *corev3.Node {
	if c.cfg.SetNodeOnFirstMessageOnly && ls.nodeSent {
		return nil
	}
	ls.nodeSent = true
	return c.node
}

// errorDetail is the NACK status Envoy sends.
func errorDetail(err error) *status.Status {
	return &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

// sendSotW sends the type's SotW request: the subscription with the last accepted version and the last
// nonce; a non-nil nack makes it a NACK.
func (c *Client) sendSotW(ls *liveStream, ts *typeState, nack error) {
	var names []string
	if len(ts.watchers) > 0 {
		names = make([]string, 0, len(ts.names)+1)
		for n := range ts.names {
			names = append(names, n)
		}
		slices.Sort(names)
		if ts.wildcard && len(names) > 0 {
			names = append([]string{"*"}, names...)
		}
	}
	if len(names) == 0 && !ts.sentOnStream && !(ts.wildcard && len(ts.watchers) > 0) {
		return // nothing to ask for yet; an empty first request would mean wildcard
	}
	ts.sentOnStream = true
	req := &discoveryv3.DiscoveryRequest{
		VersionInfo:   ts.version,
		Node:          c.nodeFor(ls),
		ResourceNames: names,
		TypeUrl:       ts.url,
		ResponseNonce: ts.nonce,
	}
	if nack != nil {
		req.ErrorDetail = errorDetail(nack)
	}
	ls.q.push(ts.url, req)
}

// decoded is one resource of a response.
type decoded struct {
	name      string
	res       Resource
	ttl       time.Duration
	heartbeat bool // a TTL refresh with no body
	unchanged bool // the bytes last accepted; res is empty
}

// decodeAny decodes one SotW resource, unwrapping a Resource wrapper (TTL, heartbeat). A resource whose
// bytes are a key of known (the cache's byRaw; nil for none) is not decoded but marked unchanged.
func decodeAny(rt ResourceType, a *anypb.Any, known map[string]string) (decoded, error) {
	var d decoded
	if a.GetTypeUrl() == resourceWrapperURL {
		w := new(discoveryv3.Resource)
		if err := a.UnmarshalTo(w); err != nil {
			return d, fmt.Errorf("unmarshal Resource wrapper: %w", err)
		}
		d.name, d.ttl = w.GetName(), w.GetTtl().AsDuration()
		if w.GetResource() == nil {
			if d.name == "" {
				return d, errors.New("heartbeat Resource without a name")
			}
			d.heartbeat = true
			return d, nil
		}
		a = w.GetResource()
	}
	if known != nil && a.GetTypeUrl() == rt.TypeURL() {
		if name, ok := known[string(a.GetValue())]; ok && (d.name == "" || d.name == name) {
			d.name, d.unchanged = name, true
			return d, nil
		}
	}
	name, msg, err := rt.Decode(a)
	if err != nil {
		if name == "" {
			name = d.name
		}
		return decoded{name: name}, err
	}
	if d.name != "" && d.name != name {
		return d, fmt.Errorf("Resource wrapper name %q does not match the resource name %q", d.name, name)
	}
	d.name, d.res = name, Resource{Msg: msg, Raw: string(a.GetValue())}
	return d, nil
}

// resourceErr names the resource (or its index) in a decode error.
func resourceErr(i int, name string, err error) error {
	if name != "" {
		return fmt.Errorf("resource %q: %w", name, err)
	}
	return fmt.Errorf("resource %d: %w", i, err)
}

func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "\n"))
}

func (c *Client) onSotW(ls *liveStream, r *discoveryv3.DiscoveryResponse) {
	ts := c.types[r.GetTypeUrl()]
	if ts == nil || c.keyOf(ts) != ls.s.key {
		c.log.Warn("xds: ignoring response for an unknown type", "type", r.GetTypeUrl())
		return
	}
	ts.nonce = r.GetNonce()
	if len(ts.watchers) == 0 {
		return // unsubscribed meanwhile; nothing to ACK for
	}
	if ts.stats != nil {
		ts.stats.attempt.Inc()
	}
	start := time.Now()
	var (
		errs  []error
		items = make([]decoded, 0, len(r.GetResources()))
		seen  = make(map[string]bool, len(r.GetResources()))
	)
	for i, a := range r.GetResources() {
		d, err := decodeAny(ts.rt, a, ts.byRaw)
		if err == nil && seen[d.name] {
			err = errors.New("duplicate resource name")
		}
		if err != nil {
			errs = append(errs, resourceErr(i, d.name, err))
			continue
		}
		seen[d.name] = true
		if ts.subscribed(d.name) {
			items = append(items, d)
		}
	}
	if len(errs) > 0 {
		c.nack(ls, ts, r.GetVersionInfo(), joinErrs(errs))
		return
	}
	u := Update{Version: r.GetVersionInfo()}
	answered := make([]string, 0, len(items))
	for _, d := range items {
		answered = append(answered, d.name)
		if d.heartbeat {
			continue
		}
		if d.unchanged {
			u.Unchanged = append(u.Unchanged, d.name)
			continue
		}
		if u.Resources == nil {
			u.Resources = map[string]Resource{}
		}
		u.Resources[d.name] = d.res
	}
	if ts.rt.AllResourcesRequired() {
		for name := range ts.cache {
			if !seen[name] { // the cache holds subscribed names only: seen is present
				u.Removed = append(u.Removed, name)
			}
		}
		slices.Sort(u.Removed)
	}
	if ts.rt.AllResourcesRequired() {
		for n := range ts.names {
			answered = append(answered, n) // the complete state answers for absent names too
		}
	}
	var err error
	if !heartbeatsOnly(items) {
		err = ts.notify(u)
	}
	if err != nil {
		// The applier refused: keep the last accepted state (and, in delta, versions) and NACK.
		ts.answer(answered...)
		c.nack(ls, ts, u.Version, err)
		return
	}
	for _, name := range u.Removed {
		ts.drop(name)
	}
	c.store(ts, items)
	ts.answer(answered...)
	c.ack(ts, start)
	ts.version = r.GetVersionInfo()
	c.sendSotW(ls, ts, nil)
}

// store caches the accepted resources of a response and (re)arms their TTLs; a heartbeat or an
// unchanged resource only refreshes its TTL.
func (c *Client) store(ts *typeState, items []decoded) {
	for _, d := range items {
		ce := ts.cache[d.name]
		switch {
		case d.heartbeat || d.unchanged:
			if ce == nil {
				continue
			}
			if d.unchanged {
				ce.version = d.res.Version // delta: the same bytes may come with a new version
			}
		default:
			ce = ts.put(d.name, d.res.Raw, d.res.Version)
		}
		c.setTTL(ts, d.name, ce, d.ttl)
	}
}

// ack counts an accepted response that arrived at start.
func (c *Client) ack(ts *typeState, start time.Time) {
	if ts.stats != nil {
		now := time.Now()
		ts.stats.success.Inc()
		ts.stats.updateTime.Set(now.UnixMilli())
		ts.stats.updateDuration.Record(uint64(now.Sub(start).Milliseconds()))
	}
}

// nack sends a NACK keeping the last accepted version, and counts it.
func (c *Client) nack(ls *liveStream, ts *typeState, version string, err error) {
	c.log.Warn("xds: rejecting update", "type", ts.url, "version", version, "err", err)
	if ts.stats != nil {
		ts.stats.rejected.Inc()
	}
	if c.cfg.Delta {
		c.sendDeltaAck(ls, ts, err)
		return
	}
	c.sendSotW(ls, ts, err)
}

// heartbeatsOnly reports whether a response only refreshed TTLs: watchers are not told about it.
func heartbeatsOnly(items []decoded) bool {
	for _, d := range items {
		if !d.heartbeat {
			return false
		}
	}
	return len(items) > 0
}

package client

import (
	"errors"
	"fmt"
	"slices"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// sendDeltaSubscription tells the server what changed in the type's subscription on this stream; the
// first request on a stream carries the whole subscription and initial_resource_versions.
func (c *Client) sendDeltaSubscription(ls *liveStream, ts *typeState) {
	active := len(ts.watchers) > 0
	want := ts.names
	wildcard := ts.wildcard && active
	if !active {
		want = nil
	}
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: ts.url}
	if !ts.sentOnStream {
		if len(want) == 0 && !wildcard {
			return
		}
		req.InitialResourceVersions = map[string]string{}
		for name, ce := range ts.cache {
			if ce.version != "" {
				req.InitialResourceVersions[name] = ce.version
			}
		}
	}
	if wildcard && !ts.sentWildcard {
		req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, "*")
	}
	if !wildcard && ts.sentWildcard {
		req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, "*")
	}
	var sub, unsub []string
	for n := range want {
		if !ts.sentNames[n] {
			sub = append(sub, n)
		}
	}
	for n := range ts.sentNames {
		if !want[n] {
			unsub = append(unsub, n)
		}
	}
	slices.Sort(sub)
	slices.Sort(unsub)
	req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, sub...)
	req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, unsub...)
	if ts.sentOnStream && len(req.ResourceNamesSubscribe) == 0 && len(req.ResourceNamesUnsubscribe) == 0 {
		return
	}
	ts.sentOnStream = true
	ts.sentWildcard = wildcard
	for _, n := range sub {
		ts.sentNames[n] = true
	}
	for _, n := range unsub {
		delete(ts.sentNames, n)
	}
	req.Node = c.nodeFor(ls)
	ls.q.push("", req)
}

// sendDeltaAck ACKs (nack nil) or NACKs the last response of the type.
func (c *Client) sendDeltaAck(ls *liveStream, ts *typeState, nack error) {
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: ts.url, ResponseNonce: ts.nonce, Node: c.nodeFor(ls)}
	if nack != nil {
		req.ErrorDetail = errorDetail(nack)
	}
	ls.q.push("", req)
}

// sameBytes reports whether a is the cached resource name as last accepted.
func sameBytes(ts *typeState, name string, a *anypb.Any) bool {
	ce := ts.cache[name]
	return ce != nil && a.GetTypeUrl() == ts.url && ce.raw == string(a.GetValue())
}

func (c *Client) onDelta(ls *liveStream, r *discoveryv3.DeltaDiscoveryResponse) {
	ts := c.types[r.GetTypeUrl()]
	if ts == nil || c.keyOf(ts) != ls.s.key {
		c.log.Warn("xds: ignoring response for an unknown type", "type", r.GetTypeUrl())
		return
	}
	ts.nonce = r.GetNonce()
	if len(ts.watchers) == 0 {
		c.sendDeltaAck(ls, ts, nil)
		return
	}
	if ts.stats != nil {
		ts.stats.attempt.Inc()
	}
	start := time.Now()
	var (
		errs  []error
		items []decoded
		seen  = map[string]bool{}
	)
	for i, res := range r.GetResources() {
		d := decoded{name: res.GetName(), ttl: res.GetTtl().AsDuration()}
		var err error
		switch {
		case seen[d.name]:
			err = errors.New("duplicate resource name")
		case res.GetResource() == nil:
			d.heartbeat = true
		case sameBytes(ts, d.name, res.GetResource()):
			d.unchanged, d.res.Version = true, res.GetVersion()
		default:
			var name string
			name, d.res.Msg, err = ts.rt.Decode(res.GetResource())
			if err == nil && name != d.name {
				err = fmt.Errorf("name %q does not match the resource's name %q", d.name, name)
			}
			d.res.Version = res.GetVersion()
			d.res.Raw = string(res.GetResource().GetValue())
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
		c.nack(ls, ts, r.GetSystemVersionInfo(), joinErrs(errs))
		return
	}
	u := Update{Version: r.GetSystemVersionInfo()}
	answered := make([]string, 0, len(items)+len(r.GetRemovedResources()))
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
	for _, name := range r.GetRemovedResources() {
		if ts.cache[name] != nil || ts.names[name] {
			u.Removed = append(u.Removed, name)
			answered = append(answered, name)
		}
	}
	var err error
	if u.Resources != nil || u.Removed != nil || u.Unchanged != nil {
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
	ts.version = r.GetSystemVersionInfo()
	c.sendDeltaAck(ls, ts, nil)
}

package client

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// stream is one xDS stream slot: the aggregated stream (key "") or one type's stream. A runner goroutine
// keeps a gRPC stream open on it, reconnecting with back-off.
type stream struct {
	key    string
	cancel context.CancelFunc
	live   *liveStream // the established gRPC stream, nil while disconnected; owned by the loop
}

// liveStream is one established gRPC stream.
type liveStream struct {
	s        *stream
	q        *sendQueue
	nodeSent bool // loop-owned
}

var streamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

func (c *Client) startStream(key string) *stream {
	ctx, cancel := context.WithCancel(c.ctx)
	s := &stream{key: key, cancel: cancel}
	c.streams[key] = s
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run(ctx, s)
	}()
	return s
}

// stopStream ends a per-type stream whose type is no longer watched.
func (c *Client) stopStream(s *stream) {
	s.cancel()
	delete(c.streams, s.key)
	if s.live != nil {
		s.live = nil
		c.connCount--
		c.updateConnected()
	}
}

func (c *Client) updateConnected() {
	if c.connCount > 0 {
		c.connected.Set(1)
	} else {
		c.connected.Set(0)
	}
}

// run keeps a stream open until ctx ends.
func (c *Client) run(ctx context.Context, s *stream) {
	method, err := methodOf(s.key, c.cfg.Delta)
	if err != nil {
		c.log.Error("xds: cannot open stream", "err", err)
		return
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		got, err := c.serve(ctx, s, method)
		if ctx.Err() != nil {
			return
		}
		if got {
			attempt = 0
		}
		c.log.Warn("xds: stream closed", "method", method, "err", err)
		c.enqueue(func() { c.streamFailed(s) })
		t := time.NewTimer(c.cfg.Backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// serve dials, opens one gRPC stream and reads it until it fails; got reports whether a response came.
func (c *Client) serve(ctx context.Context, s *stream, method string) (got bool, err error) {
	if c.cfg.Dial == nil {
		return false, errors.New("no Dial function")
	}
	cc, err := c.cfg.Dial(ctx)
	if err != nil {
		return false, err
	}
	if cl, ok := cc.(io.Closer); ok {
		defer cl.Close()
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := cc.NewStream(sctx, streamDesc, method)
	if err != nil {
		return false, err
	}
	ls := &liveStream{s: s, q: newSendQueue(c)}
	var senderDone sync.WaitGroup
	senderDone.Add(1)
	go func() {
		defer senderDone.Done()
		ls.q.drain(sctx, cancel, cs)
	}()
	defer senderDone.Wait()
	defer cancel()
	c.enqueue(func() { c.streamUp(s, ls) })
	defer c.enqueue(func() { c.streamDown(s, ls) })
	for {
		var resp proto.Message
		if c.cfg.Delta {
			resp = new(discoveryv3.DeltaDiscoveryResponse)
		} else {
			resp = new(discoveryv3.DiscoveryResponse)
		}
		if err := cs.RecvMsg(resp); err != nil {
			return got, err
		}
		got = true
		handled := make(chan struct{})
		c.enqueue(func() {
			defer close(handled)
			c.onResponse(ls, resp)
		})
		// Wait for the loop to apply it: gRPC flow control then holds back a flooding server.
		select {
		case <-handled:
		case <-sctx.Done():
			return got, sctx.Err()
		}
	}
}

// streamUp makes ls the stream's live stream and sends the subscription of every type on it, in the
// order the types were first watched.
func (c *Client) streamUp(s *stream, ls *liveStream) {
	if c.streams[s.key] != s {
		return
	}
	s.live = ls
	c.connCount++
	c.updateConnected()
	for _, ts := range c.order {
		if c.keyOf(ts) != s.key || len(ts.watchers) == 0 {
			continue
		}
		ts.resetStream()
		c.sendSubscription(ls, ts)
	}
}

func (c *Client) streamDown(s *stream, ls *liveStream) {
	if s.live != ls {
		return
	}
	s.live = nil
	c.connCount--
	c.updateConnected()
	for _, ts := range c.order {
		if c.keyOf(ts) == s.key {
			ts.resetStream()
		}
	}
}

// streamFailed counts a failed fetch for every type on the stream, as Envoy's ConnectionFailure does.
func (c *Client) streamFailed(s *stream) {
	for _, ts := range c.order {
		if c.keyOf(ts) == s.key && len(ts.watchers) > 0 && ts.stats != nil {
			ts.stats.attempt.Inc()
			ts.stats.failure.Inc()
		}
	}
}

func (c *Client) keyOf(ts *typeState) string {
	if c.cfg.ADS {
		return ""
	}
	return ts.url
}

// sendSubscription tells the server the type's current subscription.
func (c *Client) sendSubscription(ls *liveStream, ts *typeState) {
	if c.cfg.Delta {
		c.sendDeltaSubscription(ls, ts)
	} else {
		c.sendSotW(ls, ts, nil)
	}
}

// sendQueue holds the requests of one stream until its sender goroutine writes them. A SotW request
// replaces an unsent one of the same type (each carries the whole subscription), which coalesces bursts.
type sendQueue struct {
	c    *Client
	mu   sync.Mutex
	reqs []queued
	wake chan struct{}
	// Token bucket (RateLimit).
	tokens float64
	last   time.Time
}

type queued struct {
	key string // type URL for coalescing; "" never coalesces
	msg proto.Message
}

func newSendQueue(c *Client) *sendQueue {
	q := &sendQueue{c: c, wake: make(chan struct{}, 1), last: time.Now()}
	if rl := c.cfg.RateLimit; rl != nil {
		q.tokens = float64(rl.maxTokens())
	}
	return q
}

func (rl *RateLimit) maxTokens() uint32 {
	if rl.MaxTokens == 0 {
		return 100
	}
	return rl.MaxTokens
}

func (rl *RateLimit) fillRate() float64 {
	if rl.FillRate <= 0 {
		return 10
	}
	return rl.FillRate
}

func (q *sendQueue) push(key string, m proto.Message) {
	q.mu.Lock()
	replaced := false
	if key != "" {
		for i := range q.reqs {
			if q.reqs[i].key == key {
				keepNode(q.reqs[i].msg, m)
				q.reqs[i].msg = m
				replaced = true
				break
			}
		}
	}
	if !replaced {
		q.reqs = append(q.reqs, queued{key: key, msg: m})
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// keepNode gives a request that replaces a queued one the node of the one it
// replaces: with set_node_on_first_message_only that one may be the stream's
// first request, the only one to carry the node, and a control plane that
// never learns the node (go-control-plane's snapshot cache) never answers.
func keepNode(old, m proto.Message) {
	o, ok1 := old.(*discoveryv3.DiscoveryRequest)
	n, ok2 := m.(*discoveryv3.DiscoveryRequest)
	if ok1 && ok2 && n.Node == nil {
		n.Node = o.Node
	}
}

// drain writes queued requests until ctx ends or a write fails (then it cancels the stream).
func (q *sendQueue) drain(ctx context.Context, cancel context.CancelFunc, cs grpc.ClientStream) {
	for {
		q.mu.Lock()
		var m proto.Message
		if len(q.reqs) > 0 {
			m = q.reqs[0].msg
			q.reqs[0] = queued{}
			q.reqs = q.reqs[1:]
		}
		n := len(q.reqs)
		q.mu.Unlock()
		if m == nil {
			select {
			case <-ctx.Done():
				return
			case <-q.wake:
				continue
			}
		}
		if !q.take(ctx, n) {
			return
		}
		if err := cs.SendMsg(m); err != nil {
			cancel()
			return
		}
	}
}

// take waits for a rate-limit token, counting the wait as Envoy does.
func (q *sendQueue) take(ctx context.Context, pending int) bool {
	rl := q.c.cfg.RateLimit
	if rl == nil {
		return true
	}
	for {
		now := time.Now()
		q.tokens = min(float64(rl.maxTokens()), q.tokens+now.Sub(q.last).Seconds()*rl.fillRate())
		q.last = now
		if q.tokens >= 1 {
			q.tokens--
			q.c.pending.Set(0)
			return true
		}
		q.c.rateLimited.Inc()
		q.c.pending.Set(int64(pending + 1))
		wait := time.Duration((1 - q.tokens) / rl.fillRate() * float64(time.Second))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

package router

import (
	"context"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// mirror sends fire-and-forget copies of a body-less request to the route's
// request_mirror_policies clusters, with "-shadow" appended to the host as
// Envoy does. A shadow never affects the primary response: it runs on its
// own goroutine with its own copy of the headers, bounded by the route
// timeout, and its answer is read and dropped. Requests with a body are not
// mirrored (their body is streamed, not kept).
func (f *filter) mirror(h *headers.Map) {
	for _, p := range f.route.Action().GetRequestMirrorPolicies() {
		if rf := p.GetRuntimeFraction().GetDefaultValue(); rf != nil && !sampled(rf) {
			continue
		}
		cl := f.cfg.clusters.Get(p.GetCluster())
		if cl == nil {
			continue
		}
		req := h.Clone()
		if host, ok := req.Get(headers.Authority); ok {
			req.Set(headers.Authority, shadowHost(string(host)))
		}
		timeout := f.timeout
		if timeout <= 0 {
			timeout = 15 * time.Second
		}
		go sendShadow(cl, req, timeout)
	}
}

func sampled(fp *typev3.FractionalPercent) bool {
	den := uint64(100)
	switch fp.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10000
	case typev3.FractionalPercent_MILLION:
		den = 1000000
	}
	return rand.Uint64N(den) < uint64(fp.GetNumerator())
}

// shadowHost appends "-shadow" to the host part, before any port.
func shadowHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i > 0 && !strings.HasSuffix(host, "]") {
		return host[:i] + "-shadow" + host[i:]
	}
	return host + "-shadow"
}

func sendShadow(cl *upstream.Cluster, req *headers.Map, timeout time.Duration) {
	h := cl.ChooseHost(&upstream.LBContext{})
	if h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pc, err := cl.Pool(h).Get(ctx)
	if err != nil {
		return
	}
	reusable := false
	defer func() { pc.Release(reusable) }()
	codec, ok := pc.Codec.(*upstreamCodec)
	if !ok {
		codec = &upstreamCodec{dec: http1.NewDecoder(pc.Conn, http1.Limits{}), enc: http1.NewEncoder(pc.Conn)}
		pc.Codec = codec
	}
	_ = pc.Conn.SetDeadline(time.Now().Add(timeout))
	defer pc.Conn.SetDeadline(time.Time{})
	if codec.enc.WriteRequestHeaders(req, true) != nil || codec.enc.Flush() != nil {
		return
	}
	method, _ := req.Get(headers.Method)
	var resp headers.Map
	msg, err := codec.dec.ReadResponseHeaders(&resp, method)
	for err == nil && resp.StatusCode() >= 100 && resp.StatusCode() < 200 {
		msg, err = codec.dec.ReadResponseHeaders(&resp, method)
	}
	if err != nil {
		return
	}
	cl.Stats.RecordResponse(resp.StatusCode())
	if !msg.NoBody {
		for {
			if _, err := codec.dec.ReadData(); err != nil {
				if err != io.EOF {
					return
				}
				break
			}
		}
	}
	reusable = msg.KeepAlive && !msg.CloseDelimited
}

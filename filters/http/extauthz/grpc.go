package extauthz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/accesslog/grpclog"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// grpcClient calls envoy.service.auth.v3.Authorization/Check on an
// envoy_grpc cluster, over one lazily made client connection.
type grpcClient struct {
	dial func(context.Context) (grpc.ClientConnInterface, error)
	tmo  time.Duration

	mu sync.Mutex
	// conn is made on the first check and closed when the client is
	// collected (an update replaced the filter config).
	conn grpc.ClientConnInterface
}

func newGRPCClient(m *upstream.Manager, gs *corev3.GrpcService) (*grpcClient, error) {
	if gs.GetEnvoyGrpc() == nil {
		return nil, errors.New("grpc_service: only envoy_grpc is supported by outrider yet")
	}
	if err := confcheck.Fields(gs, "grpc_service", "envoy_grpc", "timeout"); err != nil {
		return nil, err
	}
	eg := gs.GetEnvoyGrpc()
	if err := confcheck.Fields(eg, "grpc_service.envoy_grpc", "cluster_name", "authority"); err != nil {
		return nil, err
	}
	name := eg.GetClusterName()
	if m.Get(name) == nil {
		return nil, fmt.Errorf("grpc_service.envoy_grpc.cluster_name: unknown cluster %q", name)
	}
	c := &grpcClient{dial: grpclog.ClusterDialer(m, name, eg.GetAuthority()), tmo: defaultTimeout}
	if d := gs.GetTimeout(); d != nil {
		c.tmo = d.AsDuration()
	}
	return c, nil
}

func (c *grpcClient) timeout() time.Duration { return c.tmo }

func (c *grpcClient) client(ctx context.Context) (grpc.ClientConnInterface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return c.conn, nil
	}
	cc, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	runtime.AddCleanup(c, func(cc grpc.ClientConnInterface) {
		if cl, ok := cc.(io.Closer); ok {
			_ = cl.Close()
		}
	}, cc)
	c.conn = cc
	return cc, nil
}

// check is Envoy's GrpcClientImpl: gRPC OK in the response's status allows
// (with ok_response's mutations), any other code denies (with
// denied_response's status, headers and body); a failed call is an error.
func (c *grpcClient) check(ctx context.Context, req *authv3.CheckRequest, _ *formatter.Context) *response {
	cc, err := c.client(ctx)
	if err != nil {
		return errorResponse
	}
	resp, err := authv3.NewAuthorizationClient(cc).Check(ctx, req)
	if err != nil {
		return errorResponse
	}
	return fromCheckResponse(resp)
}

func fromCheckResponse(resp *authv3.CheckResponse) *response {
	r := &response{}
	if codes.Code(resp.GetStatus().GetCode()) == codes.OK {
		r.status = statusOK
		ok := resp.GetOkResponse()
		if ok == nil {
			return r
		}
		r.headersToAppend, r.headersToSet = splitAppend(ok.GetHeaders(), r.headersToAppend, r.headersToSet)
		for _, h := range ok.GetResponseHeadersToAdd() {
			e := kv{h.GetHeader().GetKey(), headerValue(h.GetHeader())}
			if h.GetAppend() != nil {
				if h.GetAppend().GetValue() {
					r.respAdd = append(r.respAdd, e)
				} else {
					r.respSet = append(r.respSet, e)
				}
				continue
			}
			switch h.GetAppendAction() {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
				r.respAdd = append(r.respAdd, e)
			case corev3.HeaderValueOption_ADD_IF_ABSENT:
				r.respAddIfAbsent = append(r.respAddIfAbsent, e)
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
				r.respOverwriteIfExists = append(r.respOverwriteIfExists, e)
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				r.respSet = append(r.respSet, e)
			}
		}
		r.headersToRemove = ok.GetHeadersToRemove()
		for _, q := range ok.GetQueryParametersToSet() {
			r.querySet = append(r.querySet, kv{q.GetKey(), q.GetValue()})
		}
		r.queryRemove = ok.GetQueryParametersToRemove()
		return r
	}
	r.status, r.statusCode = statusDenied, 403
	if d := resp.GetDeniedResponse(); d != nil {
		// Only the headers to set reach the local reply, as in Envoy.
		_, r.headersToSet = splitAppend(d.GetHeaders(), nil, nil)
		if code := d.GetStatus().GetCode(); code > 0 {
			r.statusCode = int(code)
		}
		r.body = d.GetBody()
	}
	return r
}

// splitAppend sorts HeaderValueOptions by their append flag, as Envoy's
// copyHeaderFieldIntoResponse: append true appends, anything else sets.
func splitAppend(hs []*corev3.HeaderValueOption, appendTo, setTo []kv) (appended, set []kv) {
	for _, h := range hs {
		e := kv{h.GetHeader().GetKey(), headerValue(h.GetHeader())}
		if h.GetAppend().GetValue() {
			appendTo = append(appendTo, e)
		} else {
			setTo = append(setTo, e)
		}
	}
	return appendTo, setTo
}

// headerValue is the header's value, or its raw_value when value is empty.
func headerValue(h *corev3.HeaderValue) string {
	if h.GetValue() == "" && len(h.GetRawValue()) > 0 {
		return string(h.GetRawValue())
	}
	return h.GetValue()
}

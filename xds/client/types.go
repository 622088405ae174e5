package client

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs of the resource types Envoy discovers over xDS.
const (
	ListenerURL        = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteURL           = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ScopedRouteURL     = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
	VirtualHostURL     = "type.googleapis.com/envoy.config.route.v3.VirtualHost"
	ClusterURL         = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointURL        = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	SecretURL          = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	RuntimeURL         = "type.googleapis.com/envoy.service.runtime.v3.Runtime"
	ExtensionConfigURL = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"

	// resourceWrapperURL is the xDS Resource wrapper a SotW response uses to carry a TTL or a heartbeat.
	resourceWrapperURL = "type.googleapis.com/envoy.service.discovery.v3.Resource"
)

// ResourceType is one kind of xDS resource: how to recognise, decode and validate it.
type ResourceType interface {
	// TypeURL is the resource's type URL, e.g. ClusterURL.
	TypeURL() string
	// Decode unmarshals and validates one resource; an error NACKs the response that carried it.
	Decode(r *anypb.Any) (name string, res proto.Message, err error)
	// AllResourcesRequired reports whether a SotW response is the complete state (LDS, CDS, SRDS), so
	// that a resource it omits is removed.
	AllResourcesRequired() bool
}

// Resource is one decoded resource.
type Resource struct {
	// Msg is the decoded, validated resource.
	Msg proto.Message
	// Version is the resource's own version (delta xDS); empty in SotW.
	Version string
	// Raw is the wire form Msg was decoded from (the Any's value bytes), to keep instead of Msg; empty
	// when the source has none (a file source). It is shared with the client's cache.
	Raw string
}

// Update is what a watcher is told about one resource type.
type Update struct {
	// Resources are the added or changed resources by name: those whose wire bytes differ from the last
	// accepted ones (a new watcher is first told every resource held). Nil when nothing was added or
	// changed. A file or REST source may also include unchanged ones.
	Resources map[string]Resource
	// Unchanged names, in no order, the subscribed resources the response carried with the very bytes
	// last accepted: neither decoded nor in Resources. With Resources (and, for AllResourcesRequired
	// types in SotW, by the omission of Removed) it makes the full set the response carried.
	Unchanged []string
	// Removed names resources that are gone: omitted from a SotW response of an AllResourcesRequired
	// type, listed in delta removed_resources, or whose TTL expired.
	Removed []string
	// Version is the response's version_info (SotW) or system_version_info (delta); empty for updates
	// the client makes itself (TTL expiry, initial fetch timeout).
	Version string
	// InitialFetchTimeout is set when initial_fetch_timeout expired before the server answered: warming
	// should end, treating Missing as absent. Resources and Removed are then empty.
	InitialFetchTimeout bool
	// Missing names the subscribed resources the server never sent before InitialFetchTimeout; empty for a
	// wildcard subscription that got no response at all.
	Missing []string
}

// Watcher receives updates of one resource type. OnUpdate is called from the client's single
// goroutine, one call at a time; it must not call Close. It may call Watch and SetNames.
type Watcher interface {
	// OnUpdate applies u. A non-nil error NACKs the response with the error's text as error_detail (the
	// applier decides what is invalid, e.g. a route naming a missing cluster); it is ignored for updates
	// the client makes itself (TTL expiry, initial fetch timeout).
	OnUpdate(typeURL string, u Update) error
}

// WatcherFunc adapts a function to Watcher.
type WatcherFunc func(typeURL string, u Update) error

// OnUpdate calls f.
func (f WatcherFunc) OnUpdate(typeURL string, u Update) error { return f(typeURL, u) }

// protoType is a ResourceType for one generated proto message.
type protoType struct {
	url         string
	allRequired bool
	newMsg      func() proto.Message
	name        func(proto.Message) string
}

// NewType returns a ResourceType for the message newMsg makes: Decode unmarshals the Any into it, runs its
// ValidateAll (protoc-gen-validate) when it has one and names it with name.
func NewType(typeURL string, allRequired bool, newMsg func() proto.Message, name func(proto.Message) string) ResourceType {
	return &protoType{url: typeURL, allRequired: allRequired, newMsg: newMsg, name: name}
}

func (t *protoType) TypeURL() string            { return t.url }
func (t *protoType) AllResourcesRequired() bool { return t.allRequired }

func (t *protoType) Decode(r *anypb.Any) (string, proto.Message, error) {
	if r.GetTypeUrl() != t.url {
		return "", nil, fmt.Errorf("type URL %q does not match %q", r.GetTypeUrl(), t.url)
	}
	m := t.newMsg()
	if err := proto.Unmarshal(r.GetValue(), m); err != nil {
		return "", nil, fmt.Errorf("unmarshal %s: %w", t.url, err)
	}
	name := t.name(m)
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return name, nil, fmt.Errorf("proto constraint validation failed: %w", err)
		}
	}
	return name, m, nil
}

type named interface{ GetName() string }

func byName(m proto.Message) string { return m.(named).GetName() }

// The resource types Envoy discovers. Listeners, clusters and scoped route configurations are SotW
// complete state (omission removes); the others are only ever named.
var (
	ListenerType    = NewType(ListenerURL, true, func() proto.Message { return new(listenerv3.Listener) }, byName)
	RouteType       = NewType(RouteURL, false, func() proto.Message { return new(routev3.RouteConfiguration) }, byName)
	ScopedRouteType = NewType(ScopedRouteURL, true,
		func() proto.Message { return new(routev3.ScopedRouteConfiguration) }, byName)
	VirtualHostType = NewType(VirtualHostURL, false, func() proto.Message { return new(routev3.VirtualHost) }, byName)
	ClusterType     = NewType(ClusterURL, true, func() proto.Message { return new(clusterv3.Cluster) }, byName)
	EndpointType    = NewType(EndpointURL, false, func() proto.Message { return new(endpointv3.ClusterLoadAssignment) },
		func(m proto.Message) string { return m.(*endpointv3.ClusterLoadAssignment).GetClusterName() })
	SecretType          = NewType(SecretURL, false, func() proto.Message { return new(tlsv3.Secret) }, byName)
	RuntimeType         = NewType(RuntimeURL, false, func() proto.Message { return new(runtimev3.Runtime) }, byName)
	ExtensionConfigType = NewType(ExtensionConfigURL, false,
		func() proto.Message { return new(corev3.TypedExtensionConfig) }, byName)
)

// methods are the gRPC methods of each type's own (non-aggregated) discovery service: SotW, delta.
var methods = map[string][2]string{
	ListenerURL:        {"/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners", "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners"},
	RouteURL:           {"/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes", "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes"},
	ScopedRouteURL:     {"/envoy.service.route.v3.ScopedRoutesDiscoveryService/StreamScopedRoutes", "/envoy.service.route.v3.ScopedRoutesDiscoveryService/DeltaScopedRoutes"},
	VirtualHostURL:     {"", "/envoy.service.route.v3.VirtualHostDiscoveryService/DeltaVirtualHosts"},
	ClusterURL:         {"/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters", "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters"},
	EndpointURL:        {"/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints", "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints"},
	SecretURL:          {"/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets", "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"},
	RuntimeURL:         {"/envoy.service.runtime.v3.RuntimeDiscoveryService/StreamRuntime", "/envoy.service.runtime.v3.RuntimeDiscoveryService/DeltaRuntime"},
	ExtensionConfigURL: {"/envoy.service.extension.v3.ExtensionConfigDiscoveryService/StreamExtensionConfigs", "/envoy.service.extension.v3.ExtensionConfigDiscoveryService/DeltaExtensionConfigs"},
	"":                 {"/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources", "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"},
}

// methodOf returns the gRPC method for the stream key ("" is ADS).
func methodOf(key string, delta bool) (string, error) {
	m, ok := methods[key]
	i := 0
	if delta {
		i = 1
	}
	if !ok || m[i] == "" {
		mode := "SotW"
		if delta {
			mode = "delta"
		}
		return "", fmt.Errorf("no %s discovery service for type %q", mode, key)
	}
	return m[i], nil
}

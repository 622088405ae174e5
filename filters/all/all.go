// Package all links every built-in extension into the binary. Importing it
// for its side effects registers each filter under its Envoy name.
package all

import (
	_ "github.com/outrider-proxy/outrider/filters/http/compressor"          // envoy.filters.http.compressor
	_ "github.com/outrider-proxy/outrider/filters/http/compressor/brotli"   // envoy.compression.brotli.compressor
	_ "github.com/outrider-proxy/outrider/filters/http/compressor/gzip"     // envoy.compression.gzip.compressor
	_ "github.com/outrider-proxy/outrider/filters/http/compressor/zstd"     // envoy.compression.zstd.compressor
	_ "github.com/outrider-proxy/outrider/filters/http/cors"                // envoy.filters.http.cors
	_ "github.com/outrider-proxy/outrider/filters/http/csrf"                // envoy.filters.http.csrf
	_ "github.com/outrider-proxy/outrider/filters/http/decompressor"        // envoy.filters.http.decompressor
	_ "github.com/outrider-proxy/outrider/filters/http/decompressor/brotli" // envoy.compression.brotli.decompressor
	_ "github.com/outrider-proxy/outrider/filters/http/decompressor/gzip"   // envoy.compression.gzip.decompressor
	_ "github.com/outrider-proxy/outrider/filters/http/decompressor/zstd"   // envoy.compression.zstd.decompressor
	_ "github.com/outrider-proxy/outrider/filters/http/extauthz"            // envoy.filters.http.ext_authz
	_ "github.com/outrider-proxy/outrider/filters/http/grpchttp1bridge"     // envoy.filters.http.grpc_http1_bridge
	_ "github.com/outrider-proxy/outrider/filters/http/healthcheck"         // envoy.filters.http.health_check
	_ "github.com/outrider-proxy/outrider/filters/http/localratelimit"      // envoy.filters.http.local_ratelimit
	_ "github.com/outrider-proxy/outrider/filters/http/rbac"
	_ "github.com/outrider-proxy/outrider/filters/http/router"
	_ "github.com/outrider-proxy/outrider/filters/listener/httpinspector"
	_ "github.com/outrider-proxy/outrider/filters/listener/originaldst"
	_ "github.com/outrider-proxy/outrider/filters/listener/tlsinspector"
	_ "github.com/outrider-proxy/outrider/filters/network/rbac"
	_ "github.com/outrider-proxy/outrider/filters/network/tcpproxy"
	_ "github.com/outrider-proxy/outrider/proxy/hcm"
	_ "github.com/outrider-proxy/outrider/proxy/transport/proxyprotocol"
	_ "github.com/outrider-proxy/outrider/telemetry/accesslog/grpclog" // envoy.access_loggers.http_grpc, tcp_grpc
	_ "github.com/outrider-proxy/outrider/telemetry/tracing/otel"      // envoy.tracers.opentelemetry
	_ "github.com/outrider-proxy/outrider/telemetry/tracing/zipkin"    // envoy.tracers.zipkin
	_ "github.com/outrider-proxy/outrider/tls"                         // envoy.transport_sockets.tls
)

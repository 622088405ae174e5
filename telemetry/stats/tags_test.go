package stats

import (
	"reflect"
	"sort"
	"testing"
)

// Cases from Envoy's test/common/stats/tag_extractor_impl_test.cc
// (DefaultTagExtractors, ExtAuthzTagExtractors).
func TestTagExtractEnvoyExamples(t *testing.T) {
	tests := []struct {
		name, want string
		tags       []Tag
	}{
		{"cluster.ratelimit.upstream_rq_timeout", "cluster.upstream_rq_timeout",
			[]Tag{{TagClusterName, "ratelimit"}}},
		{"listener.[__1]_0.ssl.ciphers.AES256-SHA", "listener.ssl.ciphers",
			[]Tag{{TagListenerAddress, "[__1]_0"}, {TagSSLCipher, "AES256-SHA"}}},
		{"cluster.ratelimit.ssl.ciphers.ECDHE-RSA-AES128-GCM-SHA256", "cluster.ssl.ciphers",
			[]Tag{{TagClusterName, "ratelimit"}, {TagSSLCipherSuite, "ECDHE-RSA-AES128-GCM-SHA256"}}},
		{"listener.[2001_0db8_85a3_0000_0000_8a2e_0370_7334]_3543.ssl.ciphers.AES256-SHA", "listener.ssl.ciphers",
			[]Tag{{TagListenerAddress, "[2001_0db8_85a3_0000_0000_8a2e_0370_7334]_3543"}, {TagSSLCipher, "AES256-SHA"}}},
		{"listener.127.0.0.1_0.ssl.ciphers.AES256-SHA", "listener.ssl.ciphers",
			[]Tag{{TagListenerAddress, "127.0.0.1_0"}, {TagSSLCipher, "AES256-SHA"}}},
		{"listener.my_prefix.ssl.ciphers.AES256-SHA", "listener.ssl.ciphers",
			[]Tag{{TagListenerAddress, "my_prefix"}, {TagSSLCipher, "AES256-SHA"}}},
		{"listener.prefix.notmatching.ssl.ciphers.AES256-SHA", "listener.notmatching.ssl.ciphers",
			[]Tag{{TagListenerAddress, "prefix"}, {TagSSLCipher, "AES256-SHA"}}},
		{"listener.admin.ssl.ciphers.AES256-SHA", "listener.admin.ssl.ciphers",
			[]Tag{{TagSSLCipher, "AES256-SHA"}}},
		{"mongo.mongo_filter.op_reply", "mongo.op_reply", []Tag{{TagMongoPrefix, "mongo_filter"}}},
		{"mongo.mongo_filter.cmd.foo_cmd.reply_size", "mongo.cmd.reply_size",
			[]Tag{{TagMongoPrefix, "mongo_filter"}, {TagMongoCmd, "foo_cmd"}}},
		{"mongo.mongo_filter.collection.bar_collection.query.multi_get", "mongo.collection.query.multi_get",
			[]Tag{{TagMongoPrefix, "mongo_filter"}, {TagMongoCollection, "bar_collection"}}},
		{"mongo.mongo_filter.collection.bar_collection.callsite.baz_callsite.query.scatter_get",
			"mongo.collection.callsite.query.scatter_get",
			[]Tag{{TagMongoPrefix, "mongo_filter"}, {TagMongoCollection, "bar_collection"}, {TagMongoCallsite, "baz_callsite"}}},
		{"ratelimit.foo_ratelimiter.over_limit", "ratelimit.over_limit", []Tag{{TagRatelimitPrefix, "foo_ratelimiter"}}},
		{"foo_ratelimiter.http_local_rate_limit.ok", "http_local_rate_limit.ok", []Tag{{TagLocalHTTPRatelimit, "foo_ratelimiter"}}},
		{"local_rate_limit.foo_ratelimiter.rate_limited", "local_rate_limit.rate_limited",
			[]Tag{{TagLocalNetworkRatelimit, "foo_ratelimiter"}}},
		{"http.egress_dynamodb_iad.downstream_cx_total", "http.downstream_cx_total",
			[]Tag{{TagHTTPConnManagerPrefix, "egress_dynamodb_iad"}}},
		{"http.egress_dynamodb_iad.dynamodb.operation.Query.upstream_rq_time", "http.dynamodb.operation.upstream_rq_time",
			[]Tag{{TagHTTPConnManagerPrefix, "egress_dynamodb_iad"}, {TagDynamoOperation, "Query"}}},
		{"http.egress_dynamodb_iad.dynamodb.table.bar_table.upstream_rq_time", "http.dynamodb.table.upstream_rq_time",
			[]Tag{{TagHTTPConnManagerPrefix, "egress_dynamodb_iad"}, {TagDynamoTable, "bar_table"}}},
		{"http.egress_dynamodb_iad.dynamodb.table.bar_table.capacity.Query.__partition_id=ABC1234", "http.dynamodb.table.capacity",
			[]Tag{{TagHTTPConnManagerPrefix, "egress_dynamodb_iad"}, {TagDynamoTable, "bar_table"}, {TagDynamoOperation, "Query"}, {TagDynamoPartitionID, "ABC1234"}}},
		{"cluster.grpc_cluster.grpc.grpc_service_1.grpc_method_1.success", "cluster.grpc.success",
			[]Tag{{TagClusterName, "grpc_cluster"}, {TagGRPCBridgeMethod, "grpc_method_1"}, {TagGRPCBridgeService, "grpc_service_1"}}},
		{"vhost.vhost_1.vcluster.vcluster_1.upstream_rq_2xx", "vhost.vcluster.upstream_rq_xx",
			[]Tag{{TagVirtualHost, "vhost_1"}, {TagVirtualCluster, "vcluster_1"}, {TagResponseCodeClass, "2"}}},
		{"vhost.vhost_1.vcluster.vcluster_1.upstream_rq_200", "vhost.vcluster.upstream_rq",
			[]Tag{{TagVirtualHost, "vhost_1"}, {TagVirtualCluster, "vcluster_1"}, {TagResponseCode, "200"}}},
		{"listener.127.0.0.1_3012.http.http_prefix.downstream_rq_5xx", "listener.http.downstream_rq_xx",
			[]Tag{{TagHTTPConnManagerPrefix, "http_prefix"}, {TagListenerAddress, "127.0.0.1_3012"}, {TagResponseCodeClass, "5"}}},
		{"http.egress_dynamodb_iad.user_agent.ios.downstream_cx_total", "http.user_agent.downstream_cx_total",
			[]Tag{{TagHTTPUserAgent, "ios"}, {TagHTTPConnManagerPrefix, "egress_dynamodb_iad"}}},
		{"auth.clientssl.clientssl_prefix.auth_ip_allowlist", "auth.clientssl.auth_ip_allowlist",
			[]Tag{{TagClientSSLPrefix, "clientssl_prefix"}}},
		{"tcp.tcp_prefix.downstream_flow_control_resumed_reading_total", "tcp.downstream_flow_control_resumed_reading_total",
			[]Tag{{TagTCPPrefix, "tcp_prefix"}}},
		{"udp.udp_prefix.downstream_flow_control_resumed_reading_total", "udp.downstream_flow_control_resumed_reading_total",
			[]Tag{{TagUDPPrefix, "udp_prefix"}}},
		{"http.fault_connection_manager.fault.fault_cluster.aborts_injected", "http.fault.aborts_injected",
			[]Tag{{TagHTTPConnManagerPrefix, "fault_connection_manager"}, {TagFaultDownstreamCluster, "fault_cluster"}}},
		{"http.rds_connection_manager.rds.agg/route_config.1-23.update_success", "http.rds.update_success",
			[]Tag{{TagHTTPConnManagerPrefix, "rds_connection_manager"}, {TagRDSRouteConfig, "agg/route_config.1-23"}}},
		{"http.scoped_rds_connection_manager.scoped_rds.scoped_route_config.123.update_success", "http.scoped_rds.update_success",
			[]Tag{{TagHTTPConnManagerPrefix, "scoped_rds_connection_manager"}, {TagScopedRDSConfig, "scoped_route_config.123"}}},
		{"listener_manager.worker_123.dispatcher.loop_duration_us", "listener_manager.worker_dispatcher.loop_duration_us",
			[]Tag{{TagWorkerID, "123"}}},
		{"listener.127.0.0.1_3012.worker_123.downstream_cx_active", "listener.worker_downstream_cx_active",
			[]Tag{{TagListenerAddress, "127.0.0.1_3012"}, {TagWorkerID, "123"}}},
		{"listener.myprefix.worker_123.downstream_cx_active", "listener.worker_downstream_cx_active",
			[]Tag{{TagListenerAddress, "myprefix"}, {TagWorkerID, "123"}}},
		{"server.worker_123.watchdog_miss", "server.worker_watchdog_miss", []Tag{{TagWorkerID, "123"}}},
		{"thrift.thrift_prefix.response", "thrift.response", []Tag{{TagThriftPrefix, "thrift_prefix"}}},
		{"redis.my_redis_prefix.response", "redis.response", []Tag{{TagRedisPrefix, "my_redis_prefix"}}},
		{"dns_filter.my_dns_prefix.local_a_record_answers", "dns_filter.local_a_record_answers",
			[]Tag{{TagDNSFilterPrefix, "my_dns_prefix"}}},
		{"connection_limit.my_connection_limit_prefix.limited_connections", "connection_limit.limited_connections",
			[]Tag{{TagConnectionLimitPrefix, "my_connection_limit_prefix"}}},
		{"http.http_prefix.ext_authz.authpfx.denied", "http.ext_authz.denied",
			[]Tag{{TagHTTPConnManagerPrefix, "http_prefix"}, {TagExtAuthzPrefix, "authpfx"}}},
		{"cluster.grpc_cluster.ext_authz.authpfx.ok", "cluster.ext_authz.ok",
			[]Tag{{TagClusterName, "grpc_cluster"}, {TagExtAuthzPrefix, "authpfx"}}},
		// Names without tags pass through.
		{"server.uptime", "server.uptime", nil},
		{"listener_manager.total_listeners_active", "listener_manager.total_listeners_active", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, tags := TagExtract(tc.name)
			if got != tc.want {
				t.Errorf("extracted = %q, want %q", got, tc.want)
			}
			// Envoy's test compares tags as a permutation.
			sortTags(tags)
			want := append([]Tag(nil), tc.tags...)
			sortTags(want)
			if !reflect.DeepEqual(tags, want) {
				t.Errorf("tags = %v, want %v", tags, want)
			}
		})
	}
}

func sortTags(t []Tag) { sort.Slice(t, func(i, j int) bool { return t[i].Name < t[j].Name }) }

// The label order is Envoy's extractor order: un-prefixed extractors (response
// code, worker id) first, then the ones keyed on the first token.
func TestTagExtractOrder(t *testing.T) {
	_, tags := TagExtract("cluster.foo.upstream_rq_200")
	want := []Tag{{TagResponseCode, "200"}, {TagClusterName, "foo"}}
	if !reflect.DeepEqual(tags, want) {
		t.Errorf("tags = %v, want %v", tags, want)
	}
}

// From Envoy's TagExtractorTokensTest and ExtractRegexPrefix tests.
func TestTokenExtractor(t *testing.T) {
	tests := []struct {
		pattern, name string
		ok            bool
		value, rest   string
	}{
		{"$.is.the.time", "now.is.the.time", true, "now", "is.the.time"},
		{"$.is.the.*", "now.is.the.time", true, "now", "is.the.time"},
		{"$.is.the.**", "now.is.the.time.to.come.to.the.aid", true, "now", "is.the.time.to.come.to.the.aid"},
		{"$.is.the.*", "now.is.the.time.to.come.to.the.aid", false, "", ""},
		{"$.**.aid", "now.is.the.time.to.come.to.the.aid", true, "now", "is.the.time.to.come.to.the.aid"},
		{"now.**.$.of.their", "now.is.the.time.to.come.to.the.aid.fake.aid.real.of.their", true, "real", "now.is.the.time.to.come.to.the.aid.fake.aid.of.their"},
		{"now.**.aid.$.of.their", "now.is.the.time.to.come.to.the.aid.fake.aid.real.of.their", true, "real", "now.is.the.time.to.come.to.the.aid.fake.aid.of.their"},
		{"now.is.$.time", "now.is.the.time", true, "the", "now.is.time"},
		{"now.*.$.time", "now.is.the.time", true, "the", "now.is.time"},
		{"now.is.the.$", "now.is.the.time", true, "time", "now.is.the"},
		{"now.is.$.time", "now.was.the.time", false, "", ""},
		{"now.$.the", "now.is.the.time", false, "", ""},
		{"now.$.the.time.to", "now.is.the.time", false, "", ""},
	}
	for _, tc := range tests {
		e := tokenized("x", tc.pattern)
		in := splitDots(tc.name)
		tag, sp, ok := e.extractTokens(in)
		if ok != tc.ok {
			t.Errorf("%s on %s: ok = %v", tc.pattern, tc.name, ok)
			continue
		}
		if !ok {
			continue
		}
		if rest := removeSpans(tc.name, []span{sp}); tag.Value != tc.value || rest != tc.rest {
			t.Errorf("%s on %s: %q %q, want %q %q", tc.pattern, tc.name, tag.Value, rest, tc.value, tc.rest)
		}
	}
	prefixes := map[string]string{
		`^prefix(foo).`: "", `^prefix\.foo`: "prefix", `^prefix_optional(?=\.)`: "prefix_optional",
		`^notACompleteToken`: "", `^onlyToken$`: "onlyToken", `(prefix)`: "", `^(prefix)`: "", `prefix(foo)`: "",
	}
	for re, want := range prefixes {
		if got := regexPrefix(re); got != want {
			t.Errorf("regexPrefix(%q) = %q, want %q", re, got, want)
		}
	}
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

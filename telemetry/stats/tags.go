package stats

import (
	"regexp"
	"sort"
	"strings"
)

// Tag is one name/value pair extracted from a stat name, named as Envoy's
// well-known tags ("envoy.cluster_name", ...).
type Tag struct{ Name, Value string }

// Envoy's well-known tag names (source/common/config/well_known_names.h).
const (
	tagPrefix = "envoy."

	TagClusterName            = tagPrefix + "cluster_name"
	TagListenerAddress        = tagPrefix + "listener_address"
	TagHTTPConnManagerPrefix  = tagPrefix + "http_conn_manager_prefix"
	TagHTTPUserAgent          = tagPrefix + "http_user_agent"
	TagSSLCipher              = tagPrefix + "ssl_cipher"
	TagSSLCurve               = tagPrefix + "ssl_curve"
	TagSSLSigalg              = tagPrefix + "ssl_sigalg"
	TagSSLVersion             = tagPrefix + "ssl_version"
	TagSSLCipherSuite         = tagPrefix + "ssl_cipher_suite"
	TagClientSSLPrefix        = tagPrefix + "clientssl_prefix"
	TagMongoPrefix            = tagPrefix + "mongo_prefix"
	TagMongoCmd               = tagPrefix + "mongo_cmd"
	TagMongoCollection        = tagPrefix + "mongo_collection"
	TagMongoCallsite          = tagPrefix + "mongo_callsite"
	TagRatelimitPrefix        = tagPrefix + "ratelimit_prefix"
	TagLocalHTTPRatelimit     = tagPrefix + "local_http_ratelimit_prefix"
	TagLocalNetworkRatelimit  = tagPrefix + "local_network_ratelimit_prefix"
	TagLocalListenerRatelimit = tagPrefix + "local_listener_ratelimit_prefix"
	TagDNSFilterPrefix        = tagPrefix + "dns_filter_prefix"
	TagConnectionLimitPrefix  = tagPrefix + "connection_limit_prefix"
	TagTCPPrefix              = tagPrefix + "tcp_prefix"
	TagUDPPrefix              = tagPrefix + "udp_prefix"
	TagFaultDownstreamCluster = tagPrefix + "fault_downstream_cluster"
	TagDynamoOperation        = tagPrefix + "dynamo_operation"
	TagDynamoTable            = tagPrefix + "dynamo_table"
	TagDynamoPartitionID      = tagPrefix + "dynamo_partition_id"
	TagGRPCBridgeService      = tagPrefix + "grpc_bridge_service"
	TagGRPCBridgeMethod       = tagPrefix + "grpc_bridge_method"
	TagVirtualHost            = tagPrefix + "virtual_host"
	TagVirtualCluster         = tagPrefix + "virtual_cluster"
	TagResponseCode           = tagPrefix + "response_code"
	TagResponseCodeClass      = tagPrefix + "response_code_class"
	TagRDSRouteConfig         = tagPrefix + "rds_route_config"
	TagScopedRDSConfig        = tagPrefix + "scoped_rds_config"
	TagRoute                  = tagPrefix + "route"
	TagExtAuthzPrefix         = tagPrefix + "ext_authz_prefix"
	TagWorkerID               = tagPrefix + "worker_id"
	TagThriftPrefix           = tagPrefix + "thrift_prefix"
	TagRedisPrefix            = tagPrefix + "redis_prefix"
)

// extractor is one of Envoy's default tag extractors: a regex (RE2) whose
// first group is removed from the name and whose second group (or first) is
// the value, or a token pattern ("cluster.$.**").
type extractor struct {
	name     string
	prefix   string // first token the name must have; "" = any
	re       *regexp.Regexp
	substr   string // the name must contain it (regex extractors only)
	negative string // a value that does not count as a match
	tokens   []string
	matchIdx int
}

// Regex stand-ins, as Envoy's expandRegex.
var regexExpansions = strings.NewReplacer(
	"<ADDRESS>", `(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)`,
	"<CIPHER>", `[\w-]+`,
	"<TLS_VERSION>", `TLSv\d\.\d`,
	"<TAG_VALUE>", `[^\.]+`,
	// Route names: word characters, dashes, dots and slashes (Envoy matches
	// "agg/route_config.1-23" in its tests).
	"<ROUTE_CONFIG_NAME>", `[\w\-\./]+`,
	"<LISTENER_OR_CLUSTER_WITH_NAME>", `(?:listener|cluster)\..*?`,
)

func re2(name, re, substr string, negative ...string) extractor {
	e := extractor{name: name, re: regexp.MustCompile(regexExpansions.Replace(re)), substr: substr}
	if len(negative) > 0 {
		e.negative = negative[0]
	}
	e.prefix = regexPrefix(re)
	return e
}

// regexPrefix is Envoy's extractRegexPrefix: the literal first token of an
// anchored regex followed by "\." or "(?=\.)", or by "$" at the end.
func regexPrefix(re string) string {
	if !strings.HasPrefix(re, "^") {
		return ""
	}
	for i := 1; i < len(re); i++ {
		c := re[i]
		if isAlnum(c) || c == '_' {
			continue
		}
		if i > 1 {
			last := i == len(re)-1
			rest := re[i:]
			if (!last && (strings.HasPrefix(rest, `\.`) || strings.HasPrefix(rest, `(?=\.)`))) || (last && c == '$') {
				return re[1:i]
			}
		}
		return ""
	}
	return ""
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func tokenized(name, pattern string) extractor {
	e := extractor{name: name, tokens: strings.Split(pattern, ".")}
	for i, t := range e.tokens {
		if t == "$" {
			e.matchIdx = i
			break
		}
	}
	if f := e.tokens[0]; f != "$" && f != "*" && f != "**" {
		e.prefix = f
	}
	return e
}

// Envoy's default extractors (source/common/config/well_known_names.cc), regex
// ones first and token ones after, in Envoy's order: that order is the order
// of the extracted tags and so of Prometheus labels.
var (
	defaultExtractors  []extractor
	noPrefixExtractors []int
	prefixExtractors   map[string][]int
	dupNames           map[string]bool
)

func init() {
	defaultExtractors = []extractor{
		re2(TagResponseCode, `_rq(_(\d{3}))$`, "_rq_"),
		re2(TagResponseCodeClass, `_rq_((\d))xx$`, "_rq_"),
		re2(TagDynamoPartitionID, `^http\.<TAG_VALUE>\.dynamodb\.table\.<TAG_VALUE>\.capacity\.<TAG_VALUE>(\.__partition_id=(\w{7}))$`, ".dynamodb.table."),
		re2(TagDynamoOperation, `^http\.<TAG_VALUE>\.dynamodb.(?:operation|table\.<TAG_VALUE>\.capacity)(\.(<TAG_VALUE>))(?:\.|$)`, ".dynamodb."),
		re2(TagDynamoTable, `^http\.<TAG_VALUE>\.dynamodb.(?:table|error)\.((<TAG_VALUE>)\.)`, ".dynamodb."),
		re2(TagSSLCipher, `^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$`, ".ssl.ciphers."),
		re2(TagSSLCurve, `^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.curves(\.(<CIPHER>))$`, ".ssl.curves."),
		re2(TagSSLSigalg, `^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.sigalgs(\.(<CIPHER>))$`, ".ssl.sigalgs."),
		re2(TagSSLVersion, `^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.versions(\.(<TLS_VERSION>))$`, ".ssl.versions."),
		re2(TagSSLCipherSuite, `^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.(<CIPHER>))$`, ".ssl.ciphers."),
		re2(TagHTTPConnManagerPrefix, `^listener\..*?\.http\.((<TAG_VALUE>)\.)`, ".http."),
		re2(TagWorkerID, `^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)\.|server\.|listener_manager\.)worker_((\d+)\.)`, ""),
		re2(TagListenerAddress, `^listener\.((<ADDRESS>|<TAG_VALUE>)\.)`, "", "admin"),
		re2(TagRDSRouteConfig, `^http\.<TAG_VALUE>\.rds\.((<ROUTE_CONFIG_NAME>)\.)\w+?$`, ".rds."),
		re2(TagScopedRDSConfig, `^http\.<TAG_VALUE>\.scoped_rds\.((<ROUTE_CONFIG_NAME>)\.)\w+?$`, ".scoped_rds."),

		tokenized(TagMongoCallsite, "mongo.*.collection.*.callsite.$.query.**"),
		tokenized(TagMongoCollection, "mongo.*.collection.$.**.query.*"),
		tokenized(TagMongoCmd, "mongo.*.cmd.$.**"),
		tokenized(TagGRPCBridgeMethod, "cluster.*.grpc.*.$.**"),
		tokenized(TagHTTPUserAgent, "http.*.user_agent.$.**"),
		tokenized(TagVirtualCluster, "vhost.*.vcluster.$.**"),
		tokenized(TagFaultDownstreamCluster, "http.*.fault.$.**"),
		tokenized(TagGRPCBridgeService, "cluster.*.grpc.$.**"),
		tokenized(TagTCPPrefix, "tcp.$.**"),
		tokenized(TagUDPPrefix, "udp.$.**"),
		tokenized(TagClientSSLPrefix, "auth.clientssl.$.**"),
		tokenized(TagRatelimitPrefix, "ratelimit.$.**"),
		tokenized(TagClusterName, "cluster.$.**"),
		tokenized(TagExtAuthzPrefix, "cluster.*.ext_authz.$.**"),
		tokenized(TagExtAuthzPrefix, "http.*.ext_authz.$.**"),
		tokenized(TagHTTPConnManagerPrefix, "http.$.**"),
		tokenized(TagVirtualHost, "vhost.$.**"),
		tokenized(TagMongoPrefix, "mongo.$.**"),
		tokenized(TagRoute, "vhost.*.route.$.**"),
		tokenized(TagThriftPrefix, "thrift.$.**"),
		tokenized(TagRedisPrefix, "redis.$.**"),
		tokenized(TagLocalHTTPRatelimit, "$.http_local_rate_limit.**"),
		tokenized(TagLocalNetworkRatelimit, "local_rate_limit.$.**"),
		tokenized(TagLocalListenerRatelimit, "listener_local_ratelimit.$.**"),
		tokenized(TagDNSFilterPrefix, "dns_filter.$.**"),
		tokenized(TagConnectionLimitPrefix, "connection_limit.$.**"),
	}
	prefixExtractors = map[string][]int{}
	seen := map[string]int{}
	dupNames = map[string]bool{}
	for i, e := range defaultExtractors {
		if seen[e.name]++; seen[e.name] > 1 {
			dupNames[e.name] = true
		}
		if e.prefix == "" {
			noPrefixExtractors = append(noPrefixExtractors, i)
		} else {
			prefixExtractors[e.prefix] = append(prefixExtractors[e.prefix], i)
		}
	}
}

// span is a half-open byte range of the name to remove.
type span struct{ start, end int }

// TagExtract applies Envoy's default tag extractors to a stat name, returning
// the tag-extracted name and the tags in Envoy's order. For example
// "cluster.foo.upstream_rq_200" gives "cluster.upstream_rq" with
// envoy.response_code=200 and envoy.cluster_name=foo.
func TagExtract(name string) (extracted string, tags []Tag) {
	var remove []span
	var tokens []string
	var done map[string]bool
	apply := func(i int) {
		e := &defaultExtractors[i]
		dup := dupNames[e.name]
		if dup && done[e.name] {
			return
		}
		var ok bool
		var t Tag
		var sp span
		if e.re != nil {
			t, sp, ok = e.extractRegex(name)
		} else {
			if tokens == nil {
				tokens = strings.Split(name, ".")
			}
			t, sp, ok = e.extractTokens(tokens)
		}
		if !ok {
			return
		}
		tags = append(tags, t)
		remove = append(remove, sp)
		if dup {
			if done == nil {
				done = map[string]bool{}
			}
			done[e.name] = true
		}
	}
	for _, i := range noPrefixExtractors {
		apply(i)
	}
	if dot := strings.IndexByte(name, '.'); dot >= 0 {
		for _, i := range prefixExtractors[name[:dot]] {
			apply(i)
		}
	}
	return removeSpans(name, remove), tags
}

func (e *extractor) extractRegex(name string) (Tag, span, bool) {
	if e.substr != "" && !strings.Contains(name, e.substr) {
		return Tag{}, span{}, false
	}
	m := e.re.FindStringSubmatchIndex(name)
	if m == nil || len(m) < 4 || m[2] < 0 || m[3] == m[2] {
		return Tag{}, span{}, false
	}
	value := name[m[2]:m[3]]
	if len(m) >= 6 && m[4] >= 0 && m[5] > m[4] {
		value = name[m[4]:m[5]]
	}
	if e.negative != "" && value == e.negative {
		return Tag{}, span{}, false
	}
	return Tag{e.name, value}, span{m[2], m[3]}, true
}

func (e *extractor) extractTokens(in []string) (Tag, span, bool) {
	start, idx := 0, len(in)
	if !e.search(in, 0, 0, 0, &start, &idx) {
		return Tag{}, span{}, false
	}
	value := in[idx]
	end := start + len(value)
	if idx < len(in)-1 {
		end++ // the dot before the next token
	} else if start > 0 {
		start-- // the dot before the last token
	}
	return Tag{e.name, value}, span{start, end}, true
}

// search is Envoy's TagExtractorTokensImpl::searchTags.
func (e *extractor) search(in []string, ii, pi, ci int, start, idx *int) bool {
	for ; ii < len(in) && pi < len(e.tokens); ii, pi = ii+1, pi+1 {
		if pi == e.matchIdx {
			*start = ci
			*idx = ii
			continue
		}
		want := e.tokens[pi]
		if want == "**" {
			if pi == len(e.tokens)-1 {
				return true
			}
			pi++
			for ; ii < len(in); ii++ {
				if e.search(in, ii, pi, ci, start, idx) {
					return true
				}
				ci += len(in[ii]) + 1
			}
			return false
		}
		if want != "*" && want != in[ii] {
			return false
		}
		ci += len(in[ii]) + 1
	}
	return pi == len(e.tokens) && ii == len(in)
}

func removeSpans(name string, spans []span) string {
	if len(spans) == 0 {
		return name
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	var b strings.Builder
	pos := 0
	for _, s := range spans {
		if s.start > pos {
			b.WriteString(name[pos:s.start])
		}
		if s.end > pos {
			pos = s.end
		}
	}
	b.WriteString(name[pos:])
	return b.String()
}

GO ?= go
BIN := bin/outrider
# Packages on the hot path and their neighbours, run under the race detector in CI.
RACE_PKGS := ./proxy/... ./filters/... ./telemetry/... ./xds/...
FUZZTIME ?= 30s

.PHONY: all build run run-xds test test-race vet fuzz bench bench-smoke bench-check bench-compare pgo conformance conformance-xds clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/outrider

run: build
	./$(BIN) -c examples/quickstart.yaml

# The xDS demo: outrider-cp serves examples/xds-cp/resources.yaml, outrider follows it.
run-xds: build
	$(GO) build -o bin/outrider-cp ./cmd/outrider-cp
	./bin/outrider-cp -addr 127.0.0.1:18000 -resources examples/xds-cp/resources.yaml & CP=$$!; \
	trap "kill $$CP" EXIT; ./$(BIN) -c examples/xds-bootstrap.yaml

vet:
	$(GO) vet ./...

# The README's test command: vet, every test, then the race detector on the core.
test: vet
	$(GO) test -count=1 -timeout 8m ./...
	$(GO) test -count=1 -timeout 8m -race $(RACE_PKGS)

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzDecodeRequest -fuzztime=$(FUZZTIME) ./proxy/http1/
	$(GO) test -run='^$$' -fuzz=FuzzDecodeResponse -fuzztime=$(FUZZTIME) ./proxy/http1/
	$(GO) test -run='^$$' -fuzz=FuzzLoadBytes -fuzztime=$(FUZZTIME) ./xds/bootstrap/

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./bench/ ./proxy/http1/

# Every benchmark once, as CI runs them: they must still run; their numbers are not judged.
bench-smoke:
	$(GO) test -run='^$$' -bench=. -benchtime=1x -timeout 15m ./...

# The allocation goals of issue 7 as a gate (never part of make test): 0 allocs/op on the
# HTTP/1.1 and TCP proxy paths, counted over the whole process.
# Proxy allocations per HTTP/2 stream (BenchmarkHTTP2ProxyOnly: client and upstream allocate
# nothing, the direct rows prove it). Issue 7 asks for at most 2; the proxy makes 0 (h2c to
# HTTP/1.1) and 1 (h2c to h2c, gRPC unary: the attempt's state) (bench/README.md).
H2_ALLOC_LIMITS ?= h2c-http1=2 h2c-h2c=2 grpc-unary=2 direct=0 direct-grpc=0

bench-check:
	$(GO) test -run='^$$' -bench='^Benchmark(HTTP1Proxy|TCPProxy)$$' -benchmem -benchtime=20000x ./bench/ | tee /tmp/outrider-bench-check.txt
	@awk '/^Benchmark/ { for (i = 1; i <= NF; i++) if ($$i == "allocs/op" && $$(i-1) + 0 > 0) { print "bench-check: " $$1 " makes " $$(i-1) " allocs/op, want 0"; bad = 1 } } END { exit bad }' /tmp/outrider-bench-check.txt
	@echo "bench-check: 0 allocs/op on the HTTP/1.1 and TCP paths"
	$(GO) test -run='^$$' -bench='^BenchmarkHTTP2ProxyOnly$$' -benchmem -benchtime=20000x ./bench/ | tee /tmp/outrider-bench-check-h2.txt
	@awk -v limits="$(H2_ALLOC_LIMITS)" 'BEGIN { n = split(limits, kv, " "); for (i = 1; i <= n; i++) { split(kv[i], p, "="); lim[p[1]] = p[2] } } \
	  /^BenchmarkHTTP2ProxyOnly\// { name = $$1; sub(/^BenchmarkHTTP2ProxyOnly\//, "", name); sub(/-[0-9]+$$/, "", name); \
	    for (i = 1; i <= NF; i++) if ($$i == "allocs/op") { seen[name] = 1; if (!(name in lim)) { print "bench-check: no limit for " name; bad = 1 } \
	      else if ($$(i-1) + 0 > lim[name] + 0) { print "bench-check: HTTP2ProxyOnly/" name " makes " $$(i-1) " allocs/op, limit " lim[name]; bad = 1 } } } \
	  END { for (k in lim) if (!(k in seen)) { print "bench-check: HTTP2ProxyOnly/" k " did not run"; bad = 1 }; exit bad }' /tmp/outrider-bench-check-h2.txt
	@echo "bench-check: HTTP/2 and gRPC allocations per stream within $(H2_ALLOC_LIMITS)"

# Outrider against nginx, HAProxy, Caddy and httputil on loopback (about 9 min;
# SECS, TCP_SECS, LAT_SECS, ROUNDS, IDLE_N shorten it). Installs the peers if missing.
bench-compare:
	bash bench/compare.sh

# Rewrites cmd/outrider/default.pgo from a CPU profile of outrider under the bench-compare workloads
# (bench/pgo.sh, about 2 minutes); go build uses it for profile-guided optimisation.
pgo:
	bash bench/pgo.sh

# h2spec (installed by .ci/run, or: go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible)
# against the h2c listener of examples/conformance/h2c.yaml, for the report; the verdict is the
# tests (proxy/server/h2spec_test.go, whose timing-dependent cases behind a direct response are
# listed there, and the gRPC interop cases through the proxy; both also run in make test).
H2SPEC ?= $(shell command -v h2spec || echo $$($(GO) env GOPATH)/bin/h2spec)
conformance: build
	./$(BIN) -c examples/conformance/h2c.yaml --drain-time-s 1 & PID=$$!; \
	trap "kill -9 $$PID" EXIT; \
	for i in $$(seq 50); do (echo > /dev/tcp/127.0.0.1/10080) 2>/dev/null && break; sleep 0.1; done; \
	$(H2SPEC) -h 127.0.0.1 -p 10080 -o 2 || echo "h2spec: failures above; the timing-dependent ones are listed in proxy/server/h2spec_test.go"
	$(GO) test -count=1 -run 'TestH2Spec$$|TestGRPCInterop' ./proxy/server/
	$(MAKE) conformance-xds

# go-control-plane v0.14.0's integration test (the one its CI runs against Envoy) with outrider in
# Envoy's place: ads, xds, rest, delta, delta-ads, xds -mux, and each with --tls. CONF_SCOPED=0 leaves
# out the scoped-route (SRDS) and VHDS listeners; MODES="ads rest:--tls" picks runs.
conformance-xds:
	bash conformance/xds/run.sh $(MODES)

clean:
	rm -rf bin

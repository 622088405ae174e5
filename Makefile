GO ?= go
BIN := bin/outrider
# Packages on the hot path and their neighbours, run under the race detector in CI.
RACE_PKGS := ./proxy/... ./filters/... ./telemetry/... ./xds/...
FUZZTIME ?= 30s

.PHONY: all build run run-xds test test-race vet fuzz bench bench-compare clean

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

# Outrider against nginx, HAProxy, Caddy and httputil on loopback (about 9 min;
# SECS, TCP_SECS, LAT_SECS, ROUNDS, IDLE_N shorten it). Installs the peers if missing.
bench-compare:
	bash bench/compare.sh

clean:
	rm -rf bin

#!/usr/bin/env bash
# pgo.sh writes cmd/outrider/default.pgo, the profile `go build` uses for
# profile-guided optimisation of the outrider binary: a CPU profile of an
# outrider built without PGO, taken with the admin's /cpuprofiler while
# bench/compare.sh's workloads run against it one after another (HTTP/1.1
# small and 16 KiB responses, h2c to HTTP/1.1 and to h2c upstreams, gRPC
# unary and streaming, HTTP/1.1 and HTTP/2 over TLS, TCP bulk). SECS sets
# the seconds per workload (default 8). Needs wrk, h2load and openssl (make
# bench-compare installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-8}

mkdir -p bin
go build -pgo=off -o bin/outrider-nopgo ./cmd/outrider
for p in upstream grpcload bulk; do go build -o "bin/bench-$p" "./bench/$p"; done

tmp=$(mktemp -d /tmp/outrider-pgo.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
. bench/lib.sh
make_certs "$tmp/certs"
sed "s#@CERTS@#$tmp/certs#g" bench/peers/outrider.yaml >"$tmp/outrider.yaml"

taskset -c 1 bin/bench-upstream -addr 127.0.0.1:18080 -h2c 127.0.0.1:18086 -grpc 127.0.0.1:18087 \
  -bulk 127.0.0.1:18090 2>"$tmp/upstream.log" & pids+=($!)
GOMAXPROCS=1 taskset -c 0 bin/outrider-nopgo -c "$tmp/outrider.yaml" -l error \
  --config-yaml "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 18999}}, profile_path: $tmp/cpu.pprof}" \
  >"$tmp/outrider.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18999/ready && break; sleep 0.1; done

curl -sf -X POST 'http://127.0.0.1:18999/cpuprofiler?enable=y' >/dev/null
load() { echo "pgo: $*" >&2; timeout $((SECS + 30)) taskset -c 1 "$@" >/dev/null 2>&1 || echo "pgo: failed: $*" >&2; }
load wrk -t1 -c32 -d"${SECS}s" http://127.0.0.1:18081/
load wrk -t1 -c32 -d"${SECS}s" http://127.0.0.1:18081/16k
load h2load -t1 -c8 -m16 -D "$SECS" http://127.0.0.1:18181/
load h2load -t1 -c8 -m16 -D "$SECS" http://127.0.0.1:18281/
load bin/bench-grpcload -addr 127.0.0.1:18381 -mode unary -c 32 -conns 2 -d "${SECS}s" -warmup 0s
load bin/bench-grpcload -addr 127.0.0.1:18381 -mode stream -c 32 -conns 2 -d "${SECS}s" -warmup 0s
load wrk -t1 -c32 -d"${SECS}s" https://127.0.0.1:18481/
load h2load -t1 -c8 -m16 -D "$SECS" https://127.0.0.1:18481/
load bin/bench-bulk -addr 127.0.0.1:18091 -d "${SECS}s"
curl -sf -X POST 'http://127.0.0.1:18999/cpuprofiler?enable=n' >/dev/null
cp "$tmp/cpu.pprof" cmd/outrider/default.pgo
go tool pprof -top -nodecount=15 bin/outrider-nopgo cmd/outrider/default.pgo 2>/dev/null | sed -n '1,22p' >&2
echo "pgo: wrote cmd/outrider/default.pgo ($(wc -c <cmd/outrider/default.pgo) bytes)" >&2

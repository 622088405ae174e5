#!/usr/bin/env bash
# Compare outrider with nginx as a reverse proxy in front of the same upstream,
# with wrk on loopback. Each proxy is pinned to CPU 0 and given one worker;
# wrk and the upstream share CPU 1. Runs A B A B and prints requests/second.
#   bash bench/compare.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v nginx >/dev/null && command -v wrk >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk; }
go build -o bin/outrider ./cmd/outrider
go build -o bin/bench-upstream ./bench/upstream
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
taskset -c 1 bin/bench-upstream -addr 127.0.0.1:18080 & pids+=($!)
GOMAXPROCS=1 taskset -c 0 bin/outrider -c bench/peers/outrider.yaml -l error & pids+=($!)
taskset -c 0 nginx -c "$PWD/bench/peers/nginx.conf" & pids+=($!)
sleep 1
run() { taskset -c 1 wrk -t1 -c32 -d"${secs}s" "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'; }
declare -A total=([outrider]=0 [nginx]=0)
for round in 1 2; do
  for peer in outrider:18081 nginx:18082; do
    name=${peer%%:*}; port=${peer##*:}
    rps=$(run "$port"); echo "round $round $name ${rps} req/s"
    total[$name]=$(echo "${total[$name]} + $rps" | bc)
  done
done
echo "outrider/nginx ratio: $(echo "scale=2; ${total[outrider]} / ${total[nginx]}" | bc)"

#!/usr/bin/env bash
# Load comparison of outrider with nginx, HAProxy, Caddy and a plain
# httputil.ReverseProxy (bench/naiveproxy) in front of the same upstream
# (bench/upstream), on 127.0.0.1 only. Every proxy is pinned to CPU 0 with one
# worker; the load generators and the upstream run on CPU 1. Workloads run
# interleaved (A B C ... then reversed, for ROUNDS rounds) so drift hits all.
# Writes bench/results/<date>.md (one markdown table, ratios to outrider) and
# bench/results/<date>-latency.png. Durations (seconds) come from the
# environment: SECS (saturation runs, default 8), TCP_SECS (3), LAT_SECS (8),
# ROUNDS (2), IDLE_N (10000 idle connections). Defaults finish in < 10 min.
#   make bench-compare            or   SECS=3 ROUNDS=2 bash bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-8} TCP_SECS=${TCP_SECS:-3} LAT_SECS=${LAT_SECS:-8} ROUNDS=${ROUNDS:-2} IDLE_N=${IDLE_N:-10000}
ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < IDLE_N + 1000 )); then
  echo "fd limit $(ulimit -n) too low for IDLE_N=$IDLE_N" >&2; exit 1
fi

# Peers (Caddy only if Debian serves it), installed if missing.
want=()
command -v nginx >/dev/null || want+=(nginx-light)
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || want+=(libnginx-mod-stream)
command -v haproxy >/dev/null || want+=(haproxy)
command -v wrk >/dev/null || want+=(wrk)
if ! command -v caddy >/dev/null && apt-cache policy caddy 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  want+=(caddy)
fi
if ((${#want[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
fi

mkdir -p bin bench/results
go build -o bin/outrider ./cmd/outrider
for p in upstream naiveproxy openloop bulk idleconns; do go build -o "bin/bench-$p" "./bench/$p"; done

tmp=$(mktemp -d /tmp/outrider-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

declare -A port=([outrider]=18081 [nginx]=18082 [haproxy]=18083 [httputil]=18084 [caddy]=18085)
declare -A tport=([direct]=18090 [outrider]=18091 [nginx]=18092 [haproxy]=18093)
declare -A pid
peers=(outrider nginx haproxy httputil)
command -v caddy >/dev/null && peers+=(caddy)
tpeers=(direct outrider nginx haproxy)

taskset -c 1 bin/bench-upstream -addr 127.0.0.1:18080 -bulk 127.0.0.1:18090 2>"$tmp/upstream.log" & pids+=($!)
GOMAXPROCS=1 taskset -c 0 bin/outrider -c bench/peers/outrider.yaml -l error >"$tmp/outrider.log" 2>&1 &
pids+=($!); pid[outrider]=$!
taskset -c 0 nginx -c "$PWD/bench/peers/nginx.conf" -e "$tmp/nginx.err" >"$tmp/nginx.log" 2>&1 &
pids+=($!); pid[nginx]=$!
taskset -c 0 haproxy -f bench/peers/haproxy.cfg -db >"$tmp/haproxy.log" 2>&1 & pids+=($!); pid[haproxy]=$!
GOMAXPROCS=1 taskset -c 0 bin/bench-naiveproxy -addr 127.0.0.1:18084 >"$tmp/httputil.log" 2>&1 &
pids+=($!); pid[httputil]=$!
if [[ " ${peers[*]} " == *" caddy "* ]]; then
  XDG_DATA_HOME=$tmp XDG_CONFIG_HOME=$tmp GOMAXPROCS=1 taskset -c 0 \
    caddy run --config bench/peers/Caddyfile --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
  pids+=($!); pid[caddy]=$!
fi
for p in 18080 18090 "${port[@]}" "${tport[@]}"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "port $p not listening; logs in $tmp" >&2; exit 1; }
done

# The proxy's processes: the PID and its children (nginx's worker).
tree() { echo "$1" $(pgrep -P "$1" || true); }
# cpu_ticks PID: utime+stime of the tree, in clock ticks.
cpu_ticks() {
  local t=0 p
  for p in $(tree "$1"); do t=$((t + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'))); done
  echo "$t"
}
# mem_kb PID FIELD: VmRSS or VmHWM of the tree in KiB.
mem_kb() {
  local t=0 p
  for p in $(tree "$1"); do t=$((t + $(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/status"))); done
  echo "$t"
}
HZ=$(getconf CLK_TCK)
declare -A R  # "peer metric" -> space-separated values, one per round
add() { R["$1 $2"]="${R["$1 $2"]:-} $3"; }
mean() { awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; if (NF) printf "%.6g", s / NF; else printf "-" }' <<<"${R["$1 $2"]:-}"; }
order() { # round number, names...: forward on odd rounds, reversed on even
  local r=$1; shift
  if ((r % 2)); then echo "$@"; else printf '%s\n' "$@" | tac | tr '\n' ' '; fi
}
tolms() { awk '{ v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /[^m]s$/) v *= 1000; printf "%.3f", v }'; }

echo "== saturation: wrk -t1 -c32, ${SECS}s per run, $ROUNDS rounds" >&2
for round in $(seq "$ROUNDS"); do
  for w in small 16k 1m; do
    path=/; [[ $w == small ]] || path=/$w
    for peer in $(order "$round" "${peers[@]}"); do
      c0=$(cpu_ticks "${pid[$peer]}")
      out=$(timeout $((SECS + 30)) taskset -c 1 wrk -t1 -c32 -d"${SECS}s" --timeout 5s --latency \
        "http://127.0.0.1:${port[$peer]}$path")
      c1=$(cpu_ticks "${pid[$peer]}")
      rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      bad=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
      p99=$(awk '$1 == "99%" {print $2}' <<<"$out" | tolms)
      add "$peer" "$w.rps" "$rps"; add "$peer" "$w.p99" "$p99"
      add "$peer" "$w.cpu" "$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.4f", t / hz * 10000 / n }')"
      echo "round $round $w $peer: $rps req/s, p99 $p99 ms ${bad:+($bad)}" >&2
    done
  done
done

echo "== TCP bulk: ${TCP_SECS}s per run" >&2
for round in $(seq "$ROUNDS"); do
  for dir in up down; do
    for peer in $(order "$round" "${tpeers[@]}"); do
      g=$(timeout $((TCP_SECS + 10)) taskset -c 1 bin/bench-bulk -addr "127.0.0.1:${tport[$peer]}" -dir "$dir" \
        -d "${TCP_SECS}s" | sed 's/.*gbps=//')
      add "$peer" "tcp.$dir" "$g"
      echo "round $round tcp $dir $peer: $g Gbit/s" >&2
    done
  done
done

slowest=$(for peer in "${peers[@]}"; do mean "$peer" small.rps; echo; done | sort -g | head -1)
rate=$(awk -v r="$slowest" 'BEGIN { printf "%d", r / 2 }')
echo "== open loop: $rate req/s (half of the slowest peer's $slowest), ${LAT_SECS}s per run" >&2
for round in $(seq "$ROUNDS"); do
  for peer in $(order "$round" "${peers[@]}"); do
    out=$(timeout $((LAT_SECS + 30)) taskset -c 1 bin/bench-openloop -url "http://127.0.0.1:${port[$peer]}/" \
      -rate "$rate" -d "${LAT_SECS}s" -warmup 1s -c 64 -out "$tmp/openloop-$peer.csv")
    for k in p50 p99 p999; do add "$peer" "ol.$k" "$(sed "s/.*${k}_ms=\([0-9.]*\).*/\1/" <<<"$out")"; done
    add "$peer" ol.err "$(sed 's/.*errors=\([0-9]*\).*/\1/' <<<"$out")"
    echo "round $round openloop $peer: $out" >&2
  done
done

echo "== $IDLE_N idle keep-alive connections per peer" >&2
for peer in "${peers[@]}"; do
  before=$(mem_kb "${pid[$peer]}" VmRSS)
  taskset -c 1 bin/bench-idleconns -addr "127.0.0.1:${port[$peer]}" -n "$IDLE_N" -hold 3s -timeout 60s \
    >"$tmp/idle-$peer.out" 2>&1 & ipid=$!; pids+=($ipid)
  for _ in $(seq 900); do grep -qs ready "$tmp/idle-$peer.out" && break; sleep 0.1; done
  sleep 1
  held=$(mem_kb "${pid[$peer]}" VmRSS)
  opened=$(awk '/ready/ {print $2}' "$tmp/idle-$peer.out")
  wait "$ipid" || echo "idleconns $peer: $(tail -1 "$tmp/idle-$peer.out")" >&2
  add "$peer" idle.rss "$(awk -v k="$held" 'BEGIN { printf "%.1f", k / 1024 }')"
  add "$peer" idle.per "$(awk -v a="$before" -v b="$held" -v n="${opened:-0}" 'BEGIN { if (n) printf "%.2f", (b - a) / n; else print "-" }')"
  add "$peer" idle.n "${opened:-0}"
  echo "idle $peer: ${opened:-0} conns, RSS $before -> $held KiB" >&2
  sleep 1
done
for peer in "${peers[@]}"; do
  add "$peer" hwm "$(awk -v k="$(mem_kb "${pid[$peer]}" VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')"
done

# The table: each cell is the peer's mean over rounds and its ratio to outrider.
date=$(date +%F)
res=bench/results/$date.md
cell() {
  local v o; v=$(mean "$1" "$2"); o=$(mean outrider "$2")
  if [[ $1 == outrider || $v == - || $o == - ]]; then printf '%s' "$v"; return; fi
  awk -v v="$v" -v o="$o" 'BEGIN { if (o + 0 == 0) printf "%s", v; else printf "%s (%.2f×)", v, v / o }'
}
row() { # label metric peers...
  local label=$1 m=$2; shift 2
  printf '| %s |' "$label"
  for peer in "${peers[@]}"; do
    if [[ " $* " == *" $peer "* ]]; then printf ' %s |' "$(cell "$peer" "$m")"; else printf ' n/a |'; fi
  done
  echo
}
{
  echo "# Load comparison, $date"
  echo
  echo "\`SECS=$SECS TCP_SECS=$TCP_SECS LAT_SECS=$LAT_SECS ROUNDS=$ROUNDS IDLE_N=$IDLE_N bash bench/compare.sh\` on $(nproc) cores"
  echo "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')). Proxies on CPU 0 with one worker; wrk, the Go"
  echo "generators and the upstream share CPU 1. Cells: mean over rounds (ratio to outrider = peer / outrider;"
  echo "higher is better for req/s and Gbit/s, lower for latency, CPU and memory)."
  echo
  printf '| metric |'; printf ' %s |' "${peers[@]}"; echo
  printf '|---|'; printf -- '---|%.0s' "${peers[@]}"; echo
  row "HTTP/1.1 small, req/s" small.rps "${peers[@]}"
  row "HTTP/1.1 small, wrk p99 ms" small.p99 "${peers[@]}"
  row "CPU s per 10k small req" small.cpu "${peers[@]}"
  row "16 KiB body, req/s" 16k.rps "${peers[@]}"
  row "1 MiB body, req/s" 1m.rps "${peers[@]}"
  row "CPU s per 10k 1 MiB req" 1m.cpu "${peers[@]}"
  row "open loop $rate/s, p50 ms" ol.p50 "${peers[@]}"
  row "open loop $rate/s, p99 ms" ol.p99 "${peers[@]}"
  row "open loop $rate/s, p99.9 ms" ol.p999 "${peers[@]}"
  row "open loop errors" ol.err "${peers[@]}"
  row "TCP up (client→upstream), Gbit/s" tcp.up outrider nginx haproxy
  row "TCP down (upstream→client), Gbit/s" tcp.down outrider nginx haproxy
  row "RSS with $IDLE_N idle conns, MiB" idle.rss "${peers[@]}"
  row "RSS per idle conn, KiB" idle.per "${peers[@]}"
  row "peak RSS (VmHWM), MiB" hwm "${peers[@]}"
  echo
  echo "Direct loopback TCP without a proxy (both ends on CPU 1): up $(mean direct tcp.up) Gbit/s, down $(mean direct tcp.down) Gbit/s."
  echo "Per-round values:"
  echo
  echo '```'
  for k in "${!R[@]}"; do echo "$k:${R[$k]}"; done | sort
  echo '```'
} >"$res"
mkdir -p "bench/results/$date-openloop"
cp "$tmp"/openloop-*.csv "bench/results/$date-openloop/"
if (cd bench/plot && go run . -title "Open-loop latency at $rate req/s (one core per proxy)" \
    -out "../results/$date-latency.png" ../results/"$date"-openloop/*.csv); then
  echo "![latency distributions]($date-latency.png)" >>"$res"
else
  echo "plot failed; CSVs in bench/results/$date-openloop" >&2
fi
cat "$res"
rm -rf "$tmp"

#!/usr/bin/env bash
# Load comparison of outrider with nginx, HAProxy, Caddy and a plain
# httputil.ReverseProxy (bench/naiveproxy) in front of the same upstream
# (bench/upstream), on 127.0.0.1 only. Every proxy is pinned to CPU 0 with one
# worker; the load generators and the upstream run on CPU 1. Workloads run
# interleaved (A B C ... then reversed, for ROUNDS rounds) so drift hits all.
# Writes bench/results/<date>.md (one markdown table, ratios to outrider) and
# bench/results/<date>-latency.png. Durations (seconds) come from the
# environment: SECS (saturation runs, default 8), TCP_SECS (3), LAT_SECS (8),
# ROUNDS (2), IDLE_N (10000 idle connections). WORKLOADS selects what runs
# (default all: "h1 h2 grpc tls mtls tcp lat idle"); lat at LAT_RATE req/s
# when h1 is not run (default 1000). h2load uses H2_C connections with H2_M
# streams each (8, 16); bench/grpcload GRPC_C calls over GRPC_CONNS
# connections (32, 2). Defaults finish in about 17 min.
#   make bench-compare            or   SECS=3 ROUNDS=2 WORKLOADS="h2 grpc" bash bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-8} TCP_SECS=${TCP_SECS:-3} LAT_SECS=${LAT_SECS:-8} ROUNDS=${ROUNDS:-2} IDLE_N=${IDLE_N:-10000}
WORKLOADS=${WORKLOADS:-h1 h2 grpc tls mtls tcp lat idle}
H2_C=${H2_C:-8} H2_M=${H2_M:-16} GRPC_C=${GRPC_C:-32} GRPC_CONNS=${GRPC_CONNS:-2}
has() { [[ " $WORKLOADS " == *" $1 "* ]]; }
for w in $WORKLOADS; do
  [[ " h1 h2 grpc tls mtls tcp lat idle " == *" $w "* ]] || { echo "unknown workload $w" >&2; exit 2; }
done
ulimit -n "$(ulimit -Hn)"
if has idle && (( $(ulimit -n) < IDLE_N + 1000 )); then
  echo "fd limit $(ulimit -n) too low for IDLE_N=$IDLE_N" >&2; exit 1
fi

# Peers (Caddy only if Debian serves it), installed if missing.
want=()
command -v nginx >/dev/null || want+=(nginx-light)
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || want+=(libnginx-mod-stream)
command -v haproxy >/dev/null || want+=(haproxy)
command -v wrk >/dev/null || want+=(wrk)
command -v h2load >/dev/null || want+=(nghttp2-client)
command -v openssl >/dev/null || want+=(openssl)
if ! command -v caddy >/dev/null && apt-cache policy caddy 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  want+=(caddy)
fi
if ((${#want[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
fi

mkdir -p bin bench/results
go build -o bin/outrider ./cmd/outrider
for p in upstream naiveproxy openloop bulk idleconns grpcload; do go build -o "bin/bench-$p" "./bench/$p"; done

tmp=$(mktemp -d /tmp/outrider-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

. bench/lib.sh
make_certs "$tmp/certs"
# render FILE: bench/peers/FILE with @CERTS@ filled in, as $tmp/FILE.
render() { sed "s#@CERTS@#$tmp/certs#g" "bench/peers/$1" >"$tmp/$1"; echo "$tmp/$1"; }

declare -A port=([outrider]=18081 [nginx]=18082 [haproxy]=18083 [httputil]=18084 [caddy]=18085)
declare -A tport=([direct]=18090 [outrider]=18091 [nginx]=18092 [haproxy]=18093)
declare -A h2port=([outrider]=18181 [nginx]=18182 [haproxy]=18183 [caddy]=18185)
declare -A h2upport=([outrider]=18281 [haproxy]=18283 [caddy]=18285)
declare -A gport=([outrider]=18381 [nginx]=18382 [haproxy]=18383 [caddy]=18385)
declare -A tlsport=([outrider]=18481 [nginx]=18482 [haproxy]=18483 [caddy]=18485)
declare -A mport=([outrider]=18581 [nginx]=18582 [haproxy]=18583) # client sidecars
declare -A pid mpid
peers=(outrider nginx haproxy httputil)
h2peers=(outrider nginx haproxy) h2uppeers=(outrider haproxy) tlspeers=(outrider nginx haproxy)
if command -v caddy >/dev/null; then peers+=(caddy) h2peers+=(caddy) h2uppeers+=(caddy) tlspeers+=(caddy); fi
tpeers=(direct outrider nginx haproxy)
mpeers=(outrider nginx haproxy)
listen=(18080 18086 18087 18090 "${port[@]}" "${tport[@]}" "${h2port[@]}" "${gport[@]}" "${tlsport[@]}")

taskset -c 1 bin/bench-upstream -addr 127.0.0.1:18080 -h2c 127.0.0.1:18086 -grpc 127.0.0.1:18087 \
  -bulk 127.0.0.1:18090 2>"$tmp/upstream.log" & pids+=($!)
GOMAXPROCS=1 taskset -c 0 bin/outrider -c "$(render outrider.yaml)" -l error >"$tmp/outrider.log" 2>&1 &
pids+=($!); pid[outrider]=$!
taskset -c 0 nginx -c "$(render nginx.conf)" -e "$tmp/nginx.err" >"$tmp/nginx.log" 2>&1 &
pids+=($!); pid[nginx]=$!
taskset -c 0 haproxy -f "$(render haproxy.cfg)" -db >"$tmp/haproxy.log" 2>&1 & pids+=($!); pid[haproxy]=$!
GOMAXPROCS=1 taskset -c 0 bin/bench-naiveproxy -addr 127.0.0.1:18084 >"$tmp/httputil.log" 2>&1 &
pids+=($!); pid[httputil]=$!
if [[ " ${peers[*]} " == *" caddy "* ]]; then
  XDG_DATA_HOME=$tmp XDG_CONFIG_HOME=$tmp GOMAXPROCS=1 taskset -c 0 \
    caddy run --config "$(render Caddyfile)" --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
  pids+=($!); pid[caddy]=$!
fi
# mTLS: a client and a server sidecar per peer, both on CPU 0 with one worker.
if has mtls; then
  for side in client server; do
    GOMAXPROCS=1 taskset -c 0 bin/outrider -c "$(render outrider-mtls-$side.yaml)" -l error \
      >"$tmp/outrider-mtls-$side.log" 2>&1 &
    pids+=($!); mpid[outrider]+="$! "
    taskset -c 0 nginx -c "$(render nginx-mtls-$side.conf)" -e "$tmp/nginx-mtls-$side.err" \
      >"$tmp/nginx-mtls-$side.log" 2>&1 &
    pids+=($!); mpid[nginx]+="$! "
    taskset -c 0 haproxy -f "$(render haproxy-mtls-$side.cfg)" -db >"$tmp/haproxy-mtls-$side.log" 2>&1 &
    pids+=($!); mpid[haproxy]+="$! "
  done
  listen+=("${mport[@]}" 18681 18682 18683)
fi
for p in "${listen[@]}"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "port $p not listening; logs in $tmp" >&2; exit 1; }
done

# The proxy's processes: the PID and its children (nginx's worker).
tree() { echo "$1" $(pgrep -P "$1" || true); }
# cpu_ticks PID...: utime+stime of the trees, in clock ticks.
cpu_ticks() {
  local t=0 p r
  for r in "$@"; do
    for p in $(tree "$r"); do t=$((t + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'))); done
  done
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
# mean PEER METRIC: the mean of the rounds' values, skipping "-" (nothing measured).
mean() {
  awk '{ s = 0; n = 0; for (i = 1; i <= NF; i++) if ($i != "-") { s += $i; n++ } if (n) printf "%.6g", s / n; else printf "-" }' \
    <<<"${R["$1 $2"]:-}"
}
order() { # round number, names...: forward on odd rounds, reversed on even
  local r=$1; shift
  if ((r % 2)); then echo "$@"; else printf '%s\n' "$@" | tac | tr '\n' ' '; fi
}
tolms() { awk '{ v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /[^m]s$/) v *= 1000; printf "%.3f", v }'; }
# cpu10k TICKS N: CPU seconds per 10,000 requests ("-" when none succeeded).
cpu10k() { awk -v t="$1" -v hz="$HZ" -v n="${2:-0}" 'BEGIN { if (n > 0) printf "%.4f", t / hz * 10000 / n; else print "-" }'; }

# wrk_run METRIC URL PEER "PIDS" [WRK ARGS...]: one wrk -t1 -c32 run; adds
# METRIC.rps, .p99 (ms), .cpu (s per 10k requests of PIDS' trees), .err.
wrk_run() {
  local m=$1 url=$2 peer=$3 ps=$4 c0 c1 out rps reqs p99 bad; shift 4
  c0=$(cpu_ticks $ps)
  out=$(timeout $((SECS + 30)) taskset -c 1 wrk -t1 -c32 -d"${SECS}s" --timeout 5s --latency "$@" "$url")
  c1=$(cpu_ticks $ps)
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  bad=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out" | tolms)
  add "$peer" "$m.rps" "$rps"; add "$peer" "$m.p99" "$p99"; add "$peer" "$m.cpu" "$(cpu10k $((c1 - c0)) "$reqs")"
  add "$peer" "$m.err" "$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")"
  echo "round $round $m $peer: $rps req/s, p99 $p99 ms ${bad:+($bad)}" >&2
}
# h2_run METRIC URL PEER "PIDS": one h2load run (H2_C connections x H2_M
# streams, 1 s warm-up); adds METRIC.rps, .p99 (from the per-request log), .cpu, .err.
h2_run() {
  local m=$1 url=$2 peer=$3 ps=$4 c0 c1 out rps ok err p99
  rm -f "$tmp/h2load.log"
  c0=$(cpu_ticks $ps)
  out=$(timeout $((SECS + 30)) taskset -c 1 h2load -t1 -c"$H2_C" -m"$H2_M" -D "$SECS" --warm-up-time=1 \
    --log-file="$tmp/h2load.log" "$url" 2>&1) || true
  c1=$(cpu_ticks $ps)
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  ok=$(awk '/^requests:/ {print $8}' <<<"$out")
  err=$(awk '/^requests:/ {print $10 + $12 + $14}' <<<"$out")
  p99=$(awk '$2 ~ /^2/ {print $3}' "$tmp/h2load.log" 2>/dev/null | sort -n |
    awk '{ a[NR] = $1 } END { if (!NR) { print "-"; exit } i = int(NR * 0.99 + 0.999999); printf "%.3f", a[i] / 1000 }')
  add "$peer" "$m.rps" "${rps:-0}"; add "$peer" "$m.p99" "$p99"; add "$peer" "$m.cpu" "$(cpu10k $((c1 - c0)) "$ok")"
  add "$peer" "$m.err" "${err:-0}"
  echo "round $round $m $peer: ${rps:-?} req/s, p99 $p99 ms, ${err:-?} failed ($(grep -m1 -E '^Application protocol' <<<"$out" || echo 'no protocol'))" >&2
}

if has h1; then
  echo "== HTTP/1.1 saturation: wrk -t1 -c32, ${SECS}s per run, $ROUNDS rounds" >&2
  for round in $(seq "$ROUNDS"); do
    for w in small 16k 1m; do
      path=/; [[ $w == small ]] || path=/$w
      for peer in $(order "$round" "${peers[@]}"); do
        wrk_run "$w" "http://127.0.0.1:${port[$peer]}$path" "$peer" "${pid[$peer]}"
      done
    done
  done
fi

if has h2; then
  echo "== HTTP/2 (h2c prior knowledge): h2load -c$H2_C -m$H2_M, ${SECS}s per run" >&2
  for round in $(seq "$ROUNDS"); do
    for peer in $(order "$round" "${h2peers[@]}"); do
      h2_run h2 "http://127.0.0.1:${h2port[$peer]}/" "$peer" "${pid[$peer]}"
    done
    for peer in $(order "$round" "${h2uppeers[@]}"); do
      h2_run h2up "http://127.0.0.1:${h2upport[$peer]}/" "$peer" "${pid[$peer]}"
    done
  done
fi

if has grpc; then
  echo "== gRPC: bench/grpcload -c$GRPC_C over $GRPC_CONNS connections, ${SECS}s per run" >&2
  for round in $(seq "$ROUNDS"); do
    for mode in unary stream; do
      for peer in $(order "$round" "${h2peers[@]}"); do
        c0=$(cpu_ticks "${pid[$peer]}")
        out=$(timeout $((SECS + 40)) taskset -c 1 bin/bench-grpcload -addr "127.0.0.1:${gport[$peer]}" -mode "$mode" \
          -c "$GRPC_C" -conns "$GRPC_CONNS" -d "${SECS}s" -warmup 1s) || out="rps=0 ok=0 errors=-1 p99_ms=-"
        c1=$(cpu_ticks "${pid[$peer]}")
        kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$out"; }
        p99=$(kv p99_ms); [[ $(kv ok) != 0 ]] || p99=-
        add "$peer" "g$mode.rps" "$(kv rps)"; add "$peer" "g$mode.p99" "$p99"
        add "$peer" "g$mode.err" "$(kv errors)"; add "$peer" "g$mode.cpu" "$(cpu10k $((c1 - c0)) "$(kv ok)")"
        echo "round $round grpc $mode $peer: $out" >&2
      done
    done
  done
fi

if has tls; then
  echo "== TLS termination (ECDSA P-256): wrk https, h2load https, wrk Connection: close; ${SECS}s per run" >&2
  for round in $(seq "$ROUNDS"); do
    for peer in $(order "$round" "${tlspeers[@]}"); do
      wrk_run tls1 "https://127.0.0.1:${tlsport[$peer]}/" "$peer" "${pid[$peer]}"
    done
    for peer in $(order "$round" "${tlspeers[@]}"); do
      h2_run tls2 "https://127.0.0.1:${tlsport[$peer]}/" "$peer" "${pid[$peer]}"
    done
    for peer in $(order "$round" "${tlspeers[@]}"); do
      wrk_run tlshs "https://127.0.0.1:${tlsport[$peer]}/" "$peer" "${pid[$peer]}" -H "Connection: close"
    done
  done
fi

if has mtls; then
  echo "== mTLS sidecar pairs: wrk -t1 -c32 to the client sidecar, ${SECS}s per run" >&2
  for round in $(seq "$ROUNDS"); do
    for peer in $(order "$round" "${mpeers[@]}"); do
      wrk_run mtls "http://127.0.0.1:${mport[$peer]}/" "$peer" "${mpid[$peer]}"
    done
  done
fi

if has tcp; then
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
fi

if has lat; then
  if has h1; then
    slowest=$(for peer in "${peers[@]}"; do mean "$peer" small.rps; echo; done | sort -g | head -1)
    rate=$(awk -v r="$slowest" 'BEGIN { printf "%d", r / 2 }')
    why="half of the slowest peer's $slowest"
  else
    rate=${LAT_RATE:-1000} why="LAT_RATE"
  fi
  echo "== open loop: $rate req/s ($why), ${LAT_SECS}s per run" >&2
  for round in $(seq "$ROUNDS"); do
    for peer in $(order "$round" "${peers[@]}"); do
      out=$(timeout $((LAT_SECS + 30)) taskset -c 1 bin/bench-openloop -url "http://127.0.0.1:${port[$peer]}/" \
        -rate "$rate" -d "${LAT_SECS}s" -warmup 1s -c 64 -out "$tmp/openloop-$peer.csv")
      for k in p50 p99 p999; do add "$peer" "ol.$k" "$(sed "s/.*${k}_ms=\([0-9.]*\).*/\1/" <<<"$out")"; done
      add "$peer" ol.err "$(sed 's/.*errors=\([0-9]*\).*/\1/' <<<"$out")"
      echo "round $round openloop $peer: $out" >&2
    done
  done
fi

if has idle; then
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
fi
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
  echo "\`SECS=$SECS TCP_SECS=$TCP_SECS LAT_SECS=$LAT_SECS ROUNDS=$ROUNDS IDLE_N=$IDLE_N WORKLOADS=\"$WORKLOADS\" bash bench/compare.sh\`"
  echo "on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')). Proxies on CPU 0 with one worker;"
  echo "wrk, h2load, the Go generators and the upstream share CPU 1. Cells: mean over rounds (ratio to outrider ="
  echo "peer / outrider; higher is better for req/s and Gbit/s, lower for latency, CPU, memory and errors)."
  echo
  printf '| metric |'; printf ' %s |' "${peers[@]}"; echo
  printf '|---|'; printf -- '---|%.0s' "${peers[@]}"; echo
  if has h1; then
    row "HTTP/1.1 small, req/s" small.rps "${peers[@]}"
    row "HTTP/1.1 small, wrk p99 ms" small.p99 "${peers[@]}"
    row "CPU s per 10k small req" small.cpu "${peers[@]}"
    row "16 KiB body, req/s" 16k.rps "${peers[@]}"
    row "1 MiB body, req/s" 1m.rps "${peers[@]}"
    row "CPU s per 10k 1 MiB req" 1m.cpu "${peers[@]}"
  fi
  if has h2; then
    row "h2c → HTTP/1.1 upstream, req/s" h2.rps "${h2peers[@]}"
    row "h2c → HTTP/1.1, p99 ms" h2.p99 "${h2peers[@]}"
    row "h2c → HTTP/1.1, CPU s per 10k req" h2.cpu "${h2peers[@]}"
    row "h2c → HTTP/1.1, failed req" h2.err "${h2peers[@]}"
    row "h2c → h2c upstream, req/s" h2up.rps "${h2uppeers[@]}"
    row "h2c → h2c, p99 ms" h2up.p99 "${h2uppeers[@]}"
    row "h2c → h2c, CPU s per 10k req" h2up.cpu "${h2uppeers[@]}"
    row "h2c → h2c, failed req" h2up.err "${h2uppeers[@]}"
  fi
  if has grpc; then
    row "gRPC unary, calls/s" gunary.rps "${h2peers[@]}"
    row "gRPC unary, p99 ms" gunary.p99 "${h2peers[@]}"
    row "gRPC unary, CPU s per 10k calls" gunary.cpu "${h2peers[@]}"
    row "gRPC unary, errors" gunary.err "${h2peers[@]}"
    row "gRPC streaming, msgs/s" gstream.rps "${h2peers[@]}"
    row "gRPC streaming, p99 ms" gstream.p99 "${h2peers[@]}"
    row "gRPC streaming, CPU s per 10k msgs" gstream.cpu "${h2peers[@]}"
    row "gRPC streaming, errors" gstream.err "${h2peers[@]}"
  fi
  if has tls; then
    row "TLS HTTP/1.1, req/s" tls1.rps "${tlspeers[@]}"
    row "TLS HTTP/1.1, wrk p99 ms" tls1.p99 "${tlspeers[@]}"
    row "TLS HTTP/1.1, CPU s per 10k req" tls1.cpu "${tlspeers[@]}"
    row "TLS HTTP/2, req/s" tls2.rps "${tlspeers[@]}"
    row "TLS HTTP/2, p99 ms" tls2.p99 "${tlspeers[@]}"
    row "TLS HTTP/2, CPU s per 10k req" tls2.cpu "${tlspeers[@]}"
    row "TLS handshakes/s (Connection: close)" tlshs.rps "${tlspeers[@]}"
    row "CPU s per 10k TLS handshakes" tlshs.cpu "${tlspeers[@]}"
    row "TLS handshake run, errors" tlshs.err "${tlspeers[@]}"
  fi
  if has mtls; then
    row "mTLS sidecar pair, req/s" mtls.rps "${mpeers[@]}"
    row "mTLS sidecar pair, wrk p99 ms" mtls.p99 "${mpeers[@]}"
    row "mTLS, CPU s per 10k req (both sidecars)" mtls.cpu "${mpeers[@]}"
  fi
  if has lat; then
    row "open loop $rate/s, p50 ms" ol.p50 "${peers[@]}"
    row "open loop $rate/s, p99 ms" ol.p99 "${peers[@]}"
    row "open loop $rate/s, p99.9 ms" ol.p999 "${peers[@]}"
    row "open loop errors" ol.err "${peers[@]}"
  fi
  if has tcp; then
    row "TCP up (client→upstream), Gbit/s" tcp.up outrider nginx haproxy
    row "TCP down (upstream→client), Gbit/s" tcp.down outrider nginx haproxy
  fi
  if has idle; then
    row "RSS with $IDLE_N idle conns, MiB" idle.rss "${peers[@]}"
    row "RSS per idle conn, KiB" idle.per "${peers[@]}"
  fi
  row "peak RSS (VmHWM), MiB" hwm "${peers[@]}"
  echo
  if has tcp; then
    echo "Direct loopback TCP without a proxy (both ends on CPU 1): up $(mean direct tcp.up) Gbit/s, down $(mean direct tcp.down) Gbit/s."
  fi
  echo "Per-round values:"
  echo
  echo '```'
  for k in "${!R[@]}"; do echo "$k:${R[$k]}"; done | sort
  echo '```'
} >"$res"
if has lat; then
  mkdir -p "bench/results/$date-openloop"
  cp "$tmp"/openloop-*.csv "bench/results/$date-openloop/"
  if (cd bench/plot && go run . -title "Open-loop latency at $rate req/s (one core per proxy)" \
      -out "../results/$date-latency.png" ../results/"$date"-openloop/*.csv); then
    echo "![latency distributions]($date-latency.png)" >>"$res"
  else
    echo "plot failed; CSVs in bench/results/$date-openloop" >&2
  fi
fi
cat "$res"
rm -rf "$tmp"

#!/usr/bin/env bash
# go-control-plane's integration test (scripts/integration.sh of v0.14.0) with outrider in Envoy's place.
#
#   conformance/xds/run.sh build DIR      build bin/test, bin/upstream and outrider into DIR, copy the
#                                         sample bootstraps to DIR/sample; nothing runs
#   conformance/xds/run.sh [MODE...]      build into a scratch dir, then run each MODE (default: all of
#                                         ads xds rest delta delta-ads, plus xds -mux and the --tls runs)
#
# A MODE is XDS[:flag,flag], e.g. "ads", "xds:-mux", "delta:--tls". CONF_SCOPED=0 passes -scopedhttp=0
# -vhdshttp=0 to bin/test (no SRDS/VHDS listeners). Ports are integration.sh's unless PORT_XDS,
# PORT_GATEWAY, PORT_UPSTREAM, PORT_BASE, PORT_ALS, PORT_ADMIN say otherwise. Logs stay in the scratch
# dir (printed at the end of a failed mode).
set -o errexit -o nounset -o pipefail

GCP_VERSION=v0.14.0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GO=${GO:-go}

build() {
  local out=$1 gcp scratch
  mkdir -p "$out/bin" "$out/sample"
  gcp=$(cd "$ROOT" && $GO list -m -f '{{.Dir}}' github.com/envoyproxy/go-control-plane)
  if [ -z "$gcp" ] || [ ! -d "$gcp/pkg/test/main" ]; then
    echo "go-control-plane $GCP_VERSION is not in the module cache" >&2
    exit 1
  fi
  # A scratch module with outrider's requirements (go-control-plane $GCP_VERSION among them), so that
  # the build needs nothing the module cache does not already hold.
  scratch=$out/mod
  mkdir -p "$scratch/upstream"
  sed 's#^module .*#module outrider.local/confxds#' "$ROOT/go.mod" >"$scratch/go.mod"
  cp "$ROOT/go.sum" "$scratch/go.sum"
  # internal/upstream cannot be imported: its main.go is copied at build time.
  cp "$gcp/internal/upstream/main.go" "$scratch/upstream/main.go"
  chmod u+w "$scratch/upstream/main.go" "$scratch/go.mod" "$scratch/go.sum"
  (cd "$scratch" && GOFLAGS=-mod=mod $GO build -o "$out/bin/test" github.com/envoyproxy/go-control-plane/pkg/test/main)
  (cd "$scratch" && GOFLAGS=-mod=mod $GO build -o "$out/bin/upstream" ./upstream)
  (cd "$ROOT" && $GO build -o "$out/bin/outrider" ./cmd/outrider)
  cp "$gcp"/sample/bootstrap-*.yaml "$out/sample/"
  chmod u+w "$out"/sample/*.yaml
}

if [ "${1:-}" = build ]; then
  build "$2"
  exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/outrider-confxds.XXXXXX")
build "$WORK"
cd "$WORK"

P_XDS=${PORT_XDS:-18000} P_GW=${PORT_GATEWAY:-18001} P_UP=${PORT_UPSTREAM:-18080}
P_BASE=${PORT_BASE:-9000} P_ALS=${PORT_ALS:-18090} P_ADMIN=${PORT_ADMIN:-19000}
MESSAGE=$'Hi, there!\n'
EXTRA=()
if [ "${CONF_SCOPED:-1}" = 0 ]; then
  EXTRA=(-scopedhttp=0 -vhdshttp=0)
fi

MODES=("$@")
if [ ${#MODES[@]} -eq 0 ]; then
  MODES=(ads xds rest delta delta-ads xds:-mux ads:--tls xds:--tls rest:--tls delta:--tls delta-ads:--tls)
fi

run_mode() {
  local spec=$1 xds flags=() runtimes=1 log boot
  xds=${spec%%:*}
  if [ "$spec" != "$xds" ]; then IFS=, read -r -a flags <<<"${spec#*:}"; fi
  [ "$xds" = ads ] && runtimes=2
  boot="bootstrap-$xds${flags[*]:+${flags[*]// /}}.yaml"
  sed -e "s/port_value: 18000/port_value: $P_XDS/" -e "s/port_value: 18001/port_value: $P_GW/" \
    -e "s/port_value: 18090/port_value: $P_ALS/" -e "s/port_value: 19000/port_value: $P_ADMIN/" \
    "sample/bootstrap-$xds.yaml" >"$boot"
  log="outrider.$spec.log"
  bin/upstream -upstream="$P_UP" -message="$MESSAGE" 2>"upstream.$spec.log" &
  local up=$!
  bin/outrider -c "$boot" --drain-time-s 1 2>"$log" &
  local proxy=$!
  local rc=0
  bin/test --xds="$xds" --runtimes="$runtimes" -debug -message="$MESSAGE" -port="$P_XDS" -gateway="$P_GW" \
    -upstream="$P_UP" -base="$P_BASE" -als="$P_ALS" "${EXTRA[@]}" "${flags[@]}" >"test.$spec.log" 2>&1 || rc=$?
  kill "$proxy" "$up" 2>/dev/null || true
  wait "$proxy" "$up" 2>/dev/null || true
  if [ $rc -ne 0 ]; then
    echo "FAIL $spec (logs in $WORK)"
    tail -n 30 "test.$spec.log" "$log"
    return 1
  fi
  echo "PASS $spec"
}

failed=0
for m in "${MODES[@]}"; do
  run_mode "$m" || failed=1
done
if [ $failed = 0 ]; then rm -rf "$WORK"; fi
exit $failed

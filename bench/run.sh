#!/usr/bin/env bash
# tiktok-edge vs `wasmtime serve` on the same trivial components, in one run, side by
# side: requests/s and p50/p99 latency with wrk (-t2 -c32), then the mean instantiation
# time. Machines here are shared and noisy: read the ratios, not the absolute figures.
#
#   bench/run.sh [seconds per run, default 10]
set -euo pipefail
# Backtrace capture is a debugging setting (wasmtime builds an error each time a store
# is dropped): measure what production runs.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
TOOLS="$HOME/.cache/tiktok-edge/tools"
WASMTIME="$TOOLS/bin/wasmtime"

if [ ! -x "$WASMTIME" ]; then
  echo "installing wasmtime-cli 48.0.8 into $TOOLS (20-50 minutes, once)"
  cargo install wasmtime-cli --locked --version 48.0.8 --root "$TOOLS"
fi
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi

cargo build --release -q -p tiktok-edge
(cd tests/apps && cargo build --release -q --target wasm32-wasip2 -p hello-p2 -p hello-p3 --target-dir ../../target/test-apps)
EDGE="${CARGO_TARGET_DIR:-target}/release/tiktok-edge"
APPS="$PWD/target/test-apps/wasm32-wasip2/release"
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

for kind in p2 p3; do
  cat > "$WORK/$kind.toml" <<TOML
spin_manifest_version = 2
[application]
name = "bench-$kind"
[[trigger.http]]
route = "/..."
component = "hello"
[component.hello]
source = "$APPS/hello_$kind.wasm"
TOML
done
cat > "$WORK/reuse.toml" <<TOML
[component.hello]
max_instance_reuse = 128
max_concurrent_reuse = 16
TOML

wait_for() {
  for _ in $(seq 1 200); do
    curl -sf "http://$1/" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server on $1 did not come up" >&2
  return 1
}

# Prints "req/s p50_ms p99_ms" for a server on $1.
measure() {
  wrk -t2 -c32 -d"${DURATION}s" --latency "http://$1/" >"$WORK/wrk.txt"
  awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    END { printf "%.0f %.2f %.2f\n", rps, ms(p50), ms(p99) }' "$WORK/wrk.txt"
}

run_edge() { # manifest [runtime-config]
  local rc=()
  [ -n "${2:-}" ] && rc=(--runtime-config "$2")
  TIKTOK_EDGE_LOG=warn "$EDGE" up --manifest "$1" --listen 127.0.0.1:3901 --data-dir "$WORK/data" "${rc[@]}" >/dev/null 2>&1 &
  wait_for 127.0.0.1:3901
  measure 127.0.0.1:3901
  kill %% ; wait %% 2>/dev/null || true
}

run_wasmtime() { # wasm [serve flags...]
  local wasm="$1"; shift
  "$WASMTIME" serve -Scli --addr 127.0.0.1:3902 "$@" "$wasm" >/dev/null 2>&1 &
  wait_for 127.0.0.1:3902
  measure 127.0.0.1:3902
  kill %% ; wait %% 2>/dev/null || true
}

printf '%-44s %10s %9s %9s\n' "scenario (wrk -t2 -c32, ${DURATION}s)" "req/s" "p50 ms" "p99 ms"
row() { printf '%-44s %10s %9s %9s\n' "$1" $2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

e=$(run_edge "$WORK/p2.toml");                   w=$(run_wasmtime "$APPS/hello_p2.wasm")
row "wasi:http 0.2, fresh instance: tiktok-edge" "$e"; row "wasi:http 0.2, fresh instance: wasmtime serve" "$w"
r1=$(ratio "${e%% *}" "${w%% *}")
e3=$(run_edge "$WORK/p3.toml");                  w3=$(run_wasmtime "$APPS/hello_p3.wasm" --max-instance-reuse-count 1)
row "spin-sdk 7 (0.3), fresh: tiktok-edge" "$e3"; row "spin-sdk 7 (0.3), fresh: wasmtime serve" "$w3"
r2=$(ratio "${e3%% *}" "${w3%% *}")
er=$(run_edge "$WORK/p3.toml" "$WORK/reuse.toml"); wr=$(run_wasmtime "$APPS/hello_p3.wasm")
row "spin-sdk 7 (0.3), reuse 128/16: tiktok-edge" "$er"; row "spin-sdk 7 (0.3), reuse 128/16: wasmtime serve" "$wr"
r3=$(ratio "${er%% *}" "${wr%% *}")
r4=$(ratio "${er%% *}" "${w3%% *}")

echo
echo "ratios (tiktok-edge / wasmtime serve, req/s):"
echo "  wasi:http 0.2 fresh:            $r1   (goal >= 1.0)"
echo "  spin-sdk 7 fresh:               $r2   (goal >= 1.0)"
echo "  spin-sdk 7 reuse vs reuse:      $r3"
echo "  spin-sdk 7 reuse vs serve fresh: $r4   (goal >= 1.5)"
echo
cargo bench -q -p tiktok-edge --bench instantiate -- "$APPS/hello_p2.wasm"
cargo bench -q -p tiktok-edge --bench instantiate -- "$APPS/hello_p3.wasm"

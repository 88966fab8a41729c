#!/usr/bin/env bash
# Idle cost of the daemon: wake-ups per second, CPU per minute, threads and memory of a daemon
# with no calls and sync off, measured from /proc over a window (default 60 s).
#   scripts/idle-cost.sh [binary] [seconds]      (binary default: target/release/llm-sidecar)
# Wake-ups are counted as context switches of all the daemon's threads (a thread that sleeps and
# is woken switches once per wake-up).
set -euo pipefail
bin="${1:-target/release/llm-sidecar}"
window="${2:-60}"
tmp="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
export HOME="$tmp" XDG_RUNTIME_DIR="$tmp/run" XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data"
unset LLM_SIDECAR_SOCK LLM_SIDECAR_CONFIG RUST_LOG
"$bin" --log-level warn serve &
pid=$!
for _ in $(seq 100); do [ -S "$tmp/run/llm-sidecar/sock" ] && break; sleep 0.1; done
"$bin" status >/dev/null  # one call: start-up is done
sleep 5
switches() { cat /proc/"$pid"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }
cpu_ticks() { awk '{print $14 + $15}' /proc/"$pid"/stat; }
s0=$(switches); c0=$(cpu_ticks)
sleep "$window"
s1=$(switches); c1=$(cpu_ticks)
hz=$(getconf CLK_TCK)
threads=$(ls /proc/"$pid"/task | wc -l)
rss=$(awk '/VmRSS/ {print $2}' /proc/"$pid"/status)
anon=$(awk '/RssAnon/ {print $2}' /proc/"$pid"/status)
file=$(awk '/RssFile/ {print $2}' /proc/"$pid"/status)
echo "window ${window}s: $(( (s1 - s0) )) wake-ups ($(awk "BEGIN {printf \"%.2f\", ($s1 - $s0) / $window}")/s), CPU $(awk "BEGIN {printf \"%.1f\", ($c1 - $c0) * 1000 / $hz * 60 / $window}") ms/min"
echo "threads $threads; RSS ${rss} KiB (anonymous ${anon} KiB, file-backed ${file} KiB)"
for t in /proc/"$pid"/task/*; do
  printf '  %-18s %s switches\n' "$(cat "$t/comm")" "$(awk '/ctxt_switches/ {n += $2} END {print n}' "$t/status")"
done

#!/usr/bin/env bash
# Instructions a plexus build executes per plexus-bench scenario, counted by valgrind's
# callgrind. Unlike requests per second, the count does not move with the machine's load, so
# two builds run one after the other on a busy 2-core machine still compare to within a
# fraction of a percent (each build runs twice; the table shows both runs, so the noise is
# visible next to the difference).
#
# Usage: bash spec-tests/bench/instructions.sh BENCH SCALE LABEL=PLEXUS_BINARY...
#   BENCH  a plexus-bench binary (the client side; the same one drives every build)
#   SCALE  plexus-bench's --scale: tiny takes a few minutes per build under valgrind
# Example: bash spec-tests/bench/instructions.sh target/release/plexus-bench tiny \
#            before=/tmp/plexus-before after=target/release/plexus
# Counts start after the server is up (startup is not measured) and include every thread of
# the server: request handling, the store's flushes, background workers.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,14p' "$0"; exit 2; }
bench=$1
scale=$2
shift 2
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)"; exit 1; }
out=$(mktemp -d)
vpid=""
# KEEP=DIR keeps callgrind's dumps there (one folder per build and run), for callgrind_annotate.
cleanup() {
  [ -n "$vpid" ] && kill "$vpid" 2>/dev/null
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$out"/. "$KEEP"/; fi
  rm -rf "$out"
}
trap cleanup EXIT

runs=()
for spec in "$@"; do
  label=${spec%%=*}
  bin=${spec#*=}
  for run in 1 2; do
    dir=$out/$label.$run
    mkdir -p "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    PLEXUS_DATA_DIR="$dir/data" PLEXUS_CLIENT_LISTEN="127.0.0.1:$port" PLEXUS_REGISTRATION=open \
      PLEXUS_RATE_LIMITS=off PLEXUS_LOG=warn \
      valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" --dump-instr=no \
      --compress-strings=no --compress-pos=no \
      "$bin" >"$dir/log" 2>&1 &
    vpid=$!
    up=0
    for _ in $(seq 1 600); do
      if curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1; then
        up=1
        break
      fi
      sleep 0.2
    done
    [ $up = 1 ] || { echo "$label did not start under valgrind"; tail -20 "$dir/log"; exit 1; }
    callgrind_control -z "$vpid" >/dev/null
    echo "== $label, run $run ($bin)" >&2
    "$bench" run --base "http://127.0.0.1:$port" --scale "$scale" \
      --phase-hook "callgrind_control -d \"\$PLEXUS_BENCH_PHASE\" $vpid >/dev/null" >/dev/null
    kill -TERM "$vpid"
    wait "$vpid" || true
    vpid=""
    runs+=("$label.$run")
  done
done

python3 - "$out" "${runs[@]}" <<'EOF'
import glob, re, sys

out, runs = sys.argv[1], sys.argv[2:]
counts = {}  # run -> {phase: instructions}
phases = []
for run in runs:
    counts[run] = {}
    for path in glob.glob(f"{out}/{run}/cg.out.*"):
        text = open(path, errors="replace").read()
        phase = re.search(r"^desc: Trigger: (?:Client Request: |dump )(.*)$", text, re.M)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if phase and total:
            name = phase.group(1).strip()
            counts[run][name] = int(total.group(1))
            if name not in phases:
                phases.append(name)
order = ["register", "send", "sync wake-up", "initial sync setup", "initial sync", "join",
         "messages setup", "messages"]
phases.sort(key=lambda p: order.index(p) if p in order else len(order))
labels = []
for run in runs:
    label = run.rsplit(".", 1)[0]
    if label not in labels:
        labels.append(label)
head = "| scenario | " + " | ".join(f"{l} run 1 | {l} run 2" for l in labels)
if len(labels) > 1:
    head += " | " + " | ".join(f"{l} vs {labels[0]}" for l in labels[1:])
print("\nMillions of instructions the server executed, per scenario\n")
print(head + " |")
print("|" + "---|" * (1 + 2 * len(labels) + max(0, len(labels) - 1)))
for p in phases:
    row = [p]
    mean = {}
    for l in labels:
        vals = [counts.get(f"{l}.{r}", {}).get(p) for r in (1, 2)]
        row += [f"{v / 1e6:,.1f}" if v else "-" for v in vals]
        ok = [v for v in vals if v]
        mean[l] = sum(ok) / len(ok) if ok else None
    for l in labels[1:]:
        a, b = mean[labels[0]], mean[l]
        row.append(f"{(b - a) / a * 100:+.1f}%" if a and b else "-")
    print("| " + " | ".join(row) + " |")
EOF

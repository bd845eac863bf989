#!/bin/sh
# Instructions per call of the pipeline benchmark under callgrind, counting the measured run alone:
# valgrind starts with instrumentation off, and callgrind_control switches it on when the bench
# reaches its gate and dumps the count when the run ends. Instruction counts do not move with the
# machine's load, as CPU time does; --single-threaded keeps V8's compiler and GC work on the main
# thread, in the count.
#
#   tools/bench/callgrind.sh BUNDLE [bench:pipeline options...]
#
# BUNDLE is tools/bench/pipeline.ts bundled with esbuild (tsx under valgrind compiles on every run):
#   esbuild tools/bench/pipeline.ts --bundle --platform=node --format=esm --packages=external --outfile=pipeline.bundle.mjs
# Prints the bench's own lines, then "instructions per call: N".
set -eu
bundle=$1
shift
dir=$(mktemp -d)
out="$dir/callgrind.out"
# Under valgrind Redis's answers are read slowly: not an outage (the bench passes this on to the store).
TOLLGATE_STORE_TIMEOUT_MS=${TOLLGATE_STORE_TIMEOUT_MS:-120000} valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
  node --single-threaded "$bundle" --gate "$dir" "$@" > "$dir/stdout" 2> "$dir/stderr" &
pid=$!
wait_for() { while [ ! -e "$dir/$1" ]; do
  if ! kill -0 "$pid" 2>/dev/null; then cat "$dir/stderr" >&2; exit 1; fi
  sleep 0.2; done; }
calls=$(printf '%s\n' "$@" | awk 'p { print; exit } $0 == "--calls" { p = 1 }')
calls=${calls:-20000}
wait_for ready
callgrind_control -i on "$pid" > /dev/null 2>&1
touch "$dir/go"
wait_for done
callgrind_control -d "$pid" > /dev/null 2>&1
callgrind_control -i off "$pid" > /dev/null 2>&1
touch "$dir/end"
# A second measured run (both sequential and concurrent) would gate again: measure one at a time.
wait "$pid"
cat "$dir/stdout"
total=$(grep -h '^summary:' "$out".* | awk '{ s += $2 } END { print s }')
echo "instructions per call: $(( total / calls ))"
rm -rf "$dir"

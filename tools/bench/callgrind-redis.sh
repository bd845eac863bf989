#!/bin/bash
# Redis's own instructions per call of the pipeline benchmark: a private redis-server runs under
# callgrind with instrumentation off, the pipeline (tools/bench/pipeline.ts, not under valgrind)
# drives it, and instrumentation is on for the measured run alone (the bench's --gate). Counts
# Redis's user-space work (the scripts, their commands, the Lua VM, the allocator), not the
# kernel's: page faults and socket system calls are not in it.
#
#   tools/bench/callgrind-redis.sh [TREE] [bench:pipeline options...]
#
# TREE is the tollgate checkout whose pipeline runs (default: this one), e.g. another build's
# worktree for an A/B. Default options: --calls 3000 --warmup 1000 --only concurrent.
# Prints the bench's own lines, then "redis instructions per call: N".
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
tree=$here
if [ $# -gt 0 ] && [ -d "$1" ]; then tree=$(cd "$1" && pwd); shift; fi
[ $# -gt 0 ] || set -- --calls 3000 --warmup 1000 --only concurrent
command -v valgrind > /dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
dir=$(mktemp -d)
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
  redis-server --port "$port" --save '' --appendonly no > "$dir/redis.log" 2>&1 &
rpid=$!
cleanup() { redis-cli -p "$port" shutdown nosave > /dev/null 2>&1 || true; wait "$rpid" 2> /dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
until redis-cli -p "$port" ping > /dev/null 2>&1; do
  kill -0 "$rpid" 2> /dev/null || { cat "$dir/redis.log" >&2; exit 1; }
  sleep 0.5
done
calls=$(printf '%s\n' "$@" | awk 'p { print; exit } $0 == "--calls" { p = 1 }')
calls=${calls:-20000}
# Under valgrind Redis answers slowly: not an outage (the bench passes this on to the store).
(cd "$tree" && TOLLGATE_STORE_TIMEOUT_MS=120000 npx tsx tools/bench/pipeline.ts --redis "redis://127.0.0.1:$port" --gate "$dir" "$@" > "$dir/stdout" 2> "$dir/stderr") &
bpid=$!
wait_for() { while [ ! -e "$dir/$1" ]; do
  kill -0 "$bpid" 2> /dev/null || { cat "$dir/stderr" >&2; exit 1; }
  sleep 0.2; done; }
wait_for ready
callgrind_control -i on "$rpid" > /dev/null
touch "$dir/go"
wait_for done
callgrind_control -d "$rpid" > /dev/null
callgrind_control -i off "$rpid" > /dev/null
touch "$dir/end"
wait "$bpid"
cat "$dir/stdout"
total=$(grep -h '^summary:' "$dir"/callgrind.out.* | awk '{ s += $2 } END { print s }')
echo "redis instructions per call: $(( total / calls ))"

# The VM matrix inside one guest: every integration test binary once per forced backend. The
# backends run concurrently (one sequence of test binaries each), which keeps both vCPUs busy.
# Four test threads each: the guest is CPU-bound (QEMU at 100 % of its host core), so more
# threads add no speed, only latency: with eight, 24 tests at once on 5.10 and 6.1 missed
# start and stop deadlines (2026-12-06).
# Per binary and backend: the tests' skip records, then one result line (with its wall time,
# which is where CI's time goes); a failing binary's
# log tail follows it. The host compares all of it with the table in xtask/src/vm/expect.rs.
#
# /matrix/tests holds `name path` lines, /matrix/backends the backends, /matrix/unit
# `name path test` lines: unit tests that depend on the kernel (its BTF), run once per kernel
# under the backend `any`.
. /etc/twtrace-protocol

# Runs one test binary and reports it: run_one <name> <backend> <binary> [libtest args].
run_one() {
  name=$1 b=$2 path=$3
  shift 3
  log=/tmp/$b-$name.log
  skips=/tmp/$b-$name.skips
  : > "$skips"
  started=$(date +%s)
  env "$BACKEND_ENV=$b" "$SKIP_LOG_ENV=$skips" TWTRACE_TEST_EMULATED=1 \
    "$path" --nocapture "$@" < /dev/null > "$log" 2>&1
  rc=$?
  sed "s/^/$MARK_SKIP binary=$name backend=$b /" "$skips"
  passed=$(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed.*/\1/p' "$log" | head -n 1)
  echo "$MARK_RESULT binary=$name backend=$b rc=$rc passed=${passed:-0} secs=$(($(date +%s) - started))"
  if [ "$rc" -ne 0 ]; then tail -n 80 "$log" | sed "s/^/[$b $name] /"; fi
}

run_backend() {
  b=$1
  while read -r name path; do
    run_one "$name" "$b" "$path" --test-threads=4
  done < /matrix/tests
}

while read -r name path test; do
  run_one "$name" any "$path" --exact "$test"
done < /matrix/unit

for b in $(cat /matrix/backends); do
  run_backend "$b" &
done
wait

# The VM matrix inside one guest: the cells of its plan (xtask/src/vm/plan.rs), each an
# integration test binary under one forced backend, spread over lanes that run side by side
# (each lane one cell after another), which keeps both vCPUs busy. Three test threads per
# lane, four lanes: the guest is CPU-bound (QEMU at 100 % of its host core), so more threads
# add no speed, only latency: with 24 tests at once, 5.10 and 6.1 guests missed start and
# stop deadlines (2026-12-06).
# Per cell: the tests' skip records, then one result line (with its wall time, which is where
# CI's time goes); a failing cell's log tail follows it. The host compares all of it with the
# table in xtask/src/vm/expect.rs.
#
# /matrix/plan-$TWTRACE_MATRIX_PLAN holds `lane name backend path` lines (lane `alone` runs
# before the others, by itself),
# /matrix/unit-$TWTRACE_MATRIX_PLAN `name path test` lines: unit tests that depend on the
# kernel (its BTF), run by one guest of each kernel under the backend `any`, before the lanes.
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

# run_lane <lane> <test threads>
run_lane() {
  grep "^$1 " "$plan" | while read -r _ name b path; do
    run_one "$name" "$b" "$path" --test-threads="$2"
  done
}

while read -r name path test; do
  run_one "$name" any "$path" --exact "$test"
done < "/matrix/unit-$TWTRACE_MATRIX_PLAN"

plan=/matrix/plan-$TWTRACE_MATRIX_PLAN
# Lane `alone` first, by itself (binaries that read every namespace: plan.rs, ALONE), one
# test at a time: serve's tests each run a Prometheus and a twtrace serve, and four of them at
# once on two emulated vCPUs still lost a destination's series now and then (6.18, 2026-12-07).
run_lane alone 1
for lane in $(cut -d ' ' -f 1 "$plan" | grep -vx alone | sort -u); do
  run_lane "$lane" 3 &
done
wait

#!/usr/bin/env bash
# Runs every fuzz target of the repository for FUZZTIME (default 5s).
# A failure prints the fuzzer's output. A real finding is written to the
# package's testdata/fuzz/ and replayed first by the next run, so it fails
# again; a run that fails with no finding (the fuzzing engine itself losing
# a worker on a loaded machine) gets one more try.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed 's/^func //' | sort -u); do
  pkg=$(grep -rlE "^func $target\(" --include='*_test.go' . | head -1 | xargs dirname)
  for try in 1 2; do
    echo "fuzz $target ($pkg, $FUZZTIME)"
    if "$GO" test -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
      break
    fi
    grep -v '^fuzz: elapsed' "$log" | tail -40 || true
    if [ "$try" = 2 ]; then
      echo "fuzz $target failed twice" >&2
      exit 1
    fi
    echo "fuzz $target failed; running it once more (a finding in testdata/fuzz is replayed first)"
  done
done

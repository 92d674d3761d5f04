#!/usr/bin/env bash
# Model-check spaceport's lock protocol with spin (README.md in this folder explains the
# model, the bounds and each check).
#
# Exits 0 only if the corrected format 2 has no error in its whole state space, and each
# protocol known to be wrong (format 1; format 2 with the give-back the spec describes) gets
# a counterexample: that shows the assertions can fail, so "0 errors" means something.
# Builds in a temporary folder, removed on exit. Needs spin, gcc (spin preprocesses the model
# with it) and a C compiler for the verifier ($CC, by default cc).
#
#   check.sh [CHECK...]    only the named checks (names below); all by default
#   LOCK_MODEL=file.pml    check another model file (the tests use it to see a check fail)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
model="${LOCK_MODEL:-$here/lock.pml}"
CC="${CC:-cc}"
for tool in spin gcc "$CC"; do
    command -v "$tool" >/dev/null || { echo "check.sh: $tool not found" >&2; exit 2; }
done

# The bounds (also lock.pml's defaults): 3 deployments with 2 workers each, 2 forced
# unlocks and 2 plain unlocks by a person, 1 heartbeat per deployment (format 1 only).
BOUNDS=(-DN=3 -DW=2 -DFORCE=2 -DUNLOCK=2 -DHB=1)
MEMLIM_MB=2048

tmp="$(mktemp -d "${TMPDIR:-/tmp}/lock-model.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
status=0

# check NAME EXPECT DEFINE... -- EXPECT is "holds" (0 errors, exhaustive search) or "fails"
# (at least one error; its shortest-found trail is printed).
check() {
    local name=$1 expect=$2
    shift 2
    if [ ${#selected[@]} -gt 0 ] && [[ " ${selected[*]} " != *" $name "* ]]; then
        return
    fi
    local dir="$tmp/$name" pan_opts=(-m10000 -w24) start end
    mkdir "$dir"
    cp "$model" "$dir/lock.pml"
    [ "$expect" = fails ] && pan_opts+=(-i)   # iterate towards a short counterexample
    echo "== $name: spin -a ${BOUNDS[*]} $* lock.pml   (expect: $expect)"
    start=$(date +%s.%N)
    if ! (cd "$dir" && spin -a "${BOUNDS[@]}" "$@" lock.pml >spin.out 2>&1 \
            && "$CC" -O2 -DSAFETY -DCOLLAPSE -DMEMLIM="$MEMLIM_MB" -o pan pan.c >cc.out 2>&1); then
        echo "   BUILD FAILED"; cat "$dir"/spin.out "$dir"/cc.out 2>/dev/null | sed 's/^/   /'
        status=1; return
    fi
    (cd "$dir" && ./pan "${pan_opts[@]}" >pan.out 2>&1) || true
    end=$(date +%s.%N)
    local out="$dir/pan.out" errors states depth secs
    errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | tail -1)
    states=$(awk '/states, stored/ {print $1}' "$out" | tail -1)
    depth=$(sed -n 's/.*depth reached \([0-9]*\),.*/\1/p' "$out" | tail -1)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}')
    echo "   errors: ${errors:-?}   states stored: ${states:-?}   depth reached: ${depth:-?}   time: ${secs} s"
    if [ -z "$errors" ]; then
        echo "   FAILED: pan did not finish:"; sed 's/^/   /' "$out"; status=1; return
    fi
    if [ "$expect" = holds ]; then
        if [ "$errors" -ne 0 ]; then
            echo "   FAILED: expected no error"; status=1
        elif grep -qE "Search not completed|MEMLIM|max search depth too small|out of memory" "$out"; then
            echo "   FAILED: the search was not exhaustive:"
            grep -E "Search not completed|MEMLIM|max search depth|out of memory" "$out" | sed 's/^/   /'
            status=1
        else
            echo "   ok: holds in every reachable state"
        fi
    else
        if [ "$errors" -lt 1 ]; then
            echo "   FAILED: expected a counterexample, found none"; status=1; return
        fi
        echo "   ok: counterexample, as expected:"
        (cd "$dir" && spin -t -T "${BOUNDS[@]}" "$@" lock.pml 2>&1) \
            | grep -E '^(D[0-9]|P ) |failed assertion' | sed 's/^/     /'
    fi
}

selected=("$@")
known=" format2-corrected format2-as-specified format2-as-specified-commit-count format2-release-claim format1 format1-commit-count "
for name in "${selected[@]}"; do
    [[ "$known" == *" $name "* ]] || { echo "check.sh: no check named $name; checks:$known" >&2; exit 2; }
done
total_start=$(date +%s)
check format2-corrected    holds -DNO_GIVEBACK -DPRECHECK -DCHECK_RELEASE_CLAIM
check format2-as-specified fails
check format2-as-specified-commit-count fails -DNO_FRESH
check format2-release-claim fails -DNO_FENCING -DCHECK_RELEASE_CLAIM
check format1              fails -DV1
check format1-commit-count fails -DV1 -DNO_ONLY_OWN -DNO_FRESH
echo "== total: $(( $(date +%s) - total_start )) s; $([ $status -eq 0 ] && echo "all as expected" || echo "NOT as expected")"
exit $status

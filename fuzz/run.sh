#!/usr/bin/env bash
# Fuzz the codec: fuzz/run.sh TARGET|all SECONDS
#
# For each target: installs cargo-fuzz if missing, runs the target for SECONDS
# with the nightly toolchain and AddressSanitizer (on stable without a
# sanitizer, `-s none`, when nightly is absent), merges the inputs that add
# coverage into corpus/<dir>/ as fuzz-<sha1 prefix> with their verdict
# recorded in expected.tsv, and prints executions, coverage and crashes.
#
# Targets (name, cargo-fuzz binary, corpus directory) are listed in
# fuzz/targets.sh, shared with triage.sh.
#
# Environment:
#   FUZZ_PARALLEL=N   with `all`, run N targets at once (default 1; each is one
#                     libFuzzer process, i.e. -jobs=1)
#   FUZZ_MERGE_CAP=N  at most N new files per target and run go into corpus/
#                     (default 24, smallest first)
#   FUZZ_CORPUS_MAX=N never more than N fuzz-* files in a corpus directory
#                     (default 96), so the repository and the replay stay small
#   FUZZ_NO_MERGE=1   run only; leave corpus/ alone
#   FUZZ_TOOLCHAIN=T  use toolchain T (`nightly`, `stable`, ...) instead of
#                     detecting nightly
#
# Exit status: 0 when every target ran crash-free, 1 when one crashed (its
# input is in fuzz/artifacts/<binary>/; see FUZZING.md, "Triage"), 2 on a
# usage error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

# shellcheck source=targets.sh
. "$here/targets.sh"

usage() {
    echo "usage: fuzz/run.sh TARGET|all SECONDS" >&2
    echo "targets:$(echo "$TARGETS" | awk 'NF { printf " %s", $1 }')" >&2
    exit 2
}


[ $# -eq 2 ] || usage
case "$2" in '' | *[!0-9]*) usage ;; esac
secs="$2"
if [ "$1" = all ]; then
    names="$(echo "$TARGETS" | awk 'NF { print $1 }')"
else
    [ -n "$(lookup "$1")" ] || usage
    names="$1"
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

toolchain="${FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
    if cargo +nightly --version >/dev/null 2>&1; then toolchain=nightly; else toolchain=stable; fi
fi
if [ "$toolchain" = stable ]; then
    sanitizer=none
    echo "== no nightly toolchain: fuzzing on stable without a sanitizer (-s none)"
else
    sanitizer=address
fi
fuzz() { (cd "$here" && cargo "+$toolchain" fuzz "$@"); }

# libFuzzer flags from fuzz/options/<binary>.options (`key = value` lines).
flags_of() {
    awk -v dir="$here/options" -F' *= *' '
        /^[a-z_]+ *=/ { if ($1 == "dict") $2 = dir "/" $2; printf "-%s=%s\n", $1, $2 }
    ' "$here/options/$1.options"
}

# Corpus input files of a directory: not expected.tsv, README* or hidden.
inputs_of() {
    find "$1" -maxdepth 1 -type f ! -name expected.tsv ! -name 'README*' ! -name '.*' | sort
}

logs="$here/logs"
mkdir -p "$logs"

echo "== building ($toolchain, sanitizer $sanitizer, debug assertions on)"
fuzz build -O -a -s "$sanitizer" >"$logs/build.log" 2>&1 || {
    cat "$logs/build.log" >&2
    exit 1
}

# Runs one target; writes its summary line to $logs/<binary>.summary.
run_one() {
    local name bin dir
    read -r name bin dir <<<"$(lookup "$1")"
    local work="$here/corpus/$bin" committed="$root/corpus/$dir"
    local artifacts="$here/artifacts/$bin" log="$logs/$bin.log"
    mkdir -p "$work" "$artifacts" "$committed"
    # Seed the working corpus with the committed one.
    inputs_of "$committed" | while read -r f; do
        [ -e "$work/$(basename "$f")" ] || cp "$f" "$work/"
    done
    local before
    before="$(find "$artifacts" -type f | wc -l)"
    local -a flags
    mapfile -t flags < <(flags_of "$bin")

    echo "== $name: fuzzing $bin for ${secs}s (log: fuzz/logs/$bin.log)"
    local status=0
    fuzz run -O -a -s "$sanitizer" "$bin" "$work" -- \
        "${flags[@]}" -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || status=$?

    local execs rate cov ft crashes
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
    ft="$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
    crashes=$(($(find "$artifacts" -type f | wc -l) - before))
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi

    local added=0
    if [ "$crashes" -eq 0 ] && [ -z "${FUZZ_NO_MERGE:-}" ]; then
        added="$(merge_into "$bin" "$work" "$committed")"
    fi
    printf '%-12s execs %10s  exec/s %7s  cov %5s  ft %5s  crashes %s  corpus +%s (%s)\n' \
        "$name" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$crashes" "$added" \
        "corpus/$dir" >"$logs/$bin.summary"
    if [ "$crashes" -ne 0 ]; then
        echo "!! $name crashed; last lines of fuzz/logs/$bin.log:" >&2
        tail -n 30 "$log" >&2
        ls -t "$artifacts" | head -3 | sed "s|^|   fuzz/artifacts/$bin/|" >&2
        return 1
    fi
}

# Merges coverage-increasing inputs of $2 into the committed corpus $3 as
# fuzz-<sha1 prefix> files (smallest first, at most FUZZ_MERGE_CAP) and prints
# how many were added. Coverage here means new edges (-use_counters=0): inputs
# that only hit known edges a different number of times stay in the working
# corpus, not in the repository.
merge_into() {
    local bin="$1" work="$2" committed="$3"
    local tmp
    tmp="$(mktemp -d)"
    inputs_of "$committed" | while read -r f; do cp "$f" "$tmp/"; done
    local -a flags
    mapfile -t flags < <(flags_of "$bin" | grep -v '^-dict=')
    fuzz run -O -a -s "$sanitizer" "$bin" "$tmp" "$work" -- "${flags[@]}" -merge=1 -use_counters=0 \
        >"$logs/$bin.merge.log" 2>&1 || {
        echo "!! merge failed, see fuzz/logs/$bin.merge.log" >&2
        rm -rf "$tmp"
        echo 0
        return
    }
    local known
    known="$(inputs_of "$committed" | xargs -r sha1sum | cut -d' ' -f1)"
    local added=0 cap="${FUZZ_MERGE_CAP:-24}" have room
    have="$(find "$committed" -maxdepth 1 -type f -name 'fuzz-*' | wc -l)"
    room=$(("${FUZZ_CORPUS_MAX:-96}" - have))
    [ "$room" -ge "$cap" ] || cap="$room"
    # New files are named by their SHA-1; smallest first.
    while read -r f; do
        [ "$added" -lt "$cap" ] || break
        local sum
        sum="$(sha1sum "$f" | cut -d' ' -f1)"
        if ! grep -qx "$sum" <<<"$known"; then
            cp "$f" "$committed/fuzz-${sum:0:12}"
            added=$((added + 1))
        fi
    done < <(find "$tmp" -maxdepth 1 -type f -printf '%s %p\n' | sort -n | cut -d' ' -f2-)
    rm -rf "$tmp"
    if [ "$added" -gt 0 ]; then
        # Record each new file's verdict in expected.tsv (a regression baseline).
        (cd "$root" && SESSIONWIRE_RECORD="$(basename "$committed")" cargo test -q -p sessionwire-check \
            --test fuzz_replay -- "$(basename "$committed" | tr - _)_corpus" \
            >"$logs/$bin.record.log" 2>&1) ||
            echo "!! recording verdicts failed, see fuzz/logs/$bin.record.log" >&2
    fi
    echo "$added"
}

failed=0
parallel="${FUZZ_PARALLEL:-1}"
pids=()
for name in $names; do
    read -r _ bin _ <<<"$(lookup "$name")"
    rm -f "$logs/$bin.summary"
    run_one "$name" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$parallel" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done

echo "== summary ($toolchain, ${secs}s per target)"
for name in $names; do
    read -r _ bin _ <<<"$(lookup "$name")"
    cat "$logs/$bin.summary" 2>/dev/null || echo "$name: no result"
done
exit "$failed"

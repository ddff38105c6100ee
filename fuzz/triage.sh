#!/usr/bin/env bash
# From a fuzz crash to a regression case: fuzz/triage.sh TARGET ARTIFACT [NAME]
#
# 1. minimises ARTIFACT with `cargo fuzz tmin` (falls back to ARTIFACT itself
#    when it does not reproduce under tmin);
# 2. copies the result into corpus/<dir>/NAME (default regress-<sha1 prefix>);
# 3. records its current verdict in corpus/<dir>/expected.tsv and replays the
#    corpus (check/tests/fuzz_replay.rs), which fails until the bug is fixed.
#
# After the fix, run `cargo test -p sessionwire --features fuzzing --test
# fuzz_replay`; if the fix changed the verdict, correct the row so it says
# what docs/protocol.md wants. The replay test covers the file from then on.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

# shellcheck source=targets.sh
. "$here/targets.sh"

usage() {
    echo "usage: fuzz/triage.sh TARGET ARTIFACT [NAME]" >&2
    exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
line="$(lookup "$1")"
[ -n "$line" ] || usage
read -r _ bin dir <<<"$line"
artifact="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
[ -f "$artifact" ] || { echo "no such file: $2" >&2; exit 2; }

toolchain="${FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
    if cargo +nightly --version >/dev/null 2>&1; then toolchain=nightly; else toolchain=stable; fi
fi
sanitizer=address
[ "$toolchain" = stable ] && sanitizer=none
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

mkdir -p "$here/logs" "$here/artifacts/$bin"
log="$here/logs/$bin.tmin.log"
mark="$(mktemp)"
echo "== minimising $2 ($bin, $toolchain, log: fuzz/logs/$bin.tmin.log)"
# No -max_len here: libFuzzer's crash minimisation sets it itself (and
# asserts that nobody did before).
(cd "$here" && cargo "+$toolchain" fuzz tmin -O -a -s "$sanitizer" "$bin" "$artifact") \
    >"$log" 2>&1 || true
minimized="$(find "$here/artifacts/$bin" -name 'minimized-from-*' -newer "$mark" | head -1)"
rm -f "$mark"
# Keep the minimised input only if it still fails the target.
if [ -n "$minimized" ] && (cd "$here" && cargo "+$toolchain" fuzz run -O -a -s "$sanitizer" \
    "$bin" "$minimized" -- -runs=1) >"$here/logs/$bin.tmin-check.log" 2>&1; then
    echo "   the minimised input does not fail the target (see fuzz/logs/$bin.tmin-check.log)"
    minimized=""
fi
if [ -z "$minimized" ]; then
    echo "   keeping the artifact as it is"
    minimized="$artifact"
fi

sum="$(sha1sum "$minimized" | cut -d' ' -f1)"
name="${3:-regress-${sum:0:12}}"
dest="$root/corpus/$dir/$name"
[ -e "$dest" ] && { echo "corpus/$dir/$name exists already" >&2; exit 2; }
cp "$minimized" "$dest"
echo "== added corpus/$dir/$name ($(wc -c <"$dest") bytes)"

echo "== recording its verdict and replaying the corpus"
status=0
(cd "$root" && SESSIONWIRE_RECORD="$dir" cargo test -q -p sessionwire-check \
    --test fuzz_replay -- "${dir//-/_}_corpus") || status=$?
grep -P "^\Q$name\E\t" "$root/corpus/$dir/expected.tsv" || echo "   (no row: the verdict itself panicked)"
if [ "$status" -ne 0 ]; then
    echo "== the replay fails on it: fix the bug, rerun the replay, check the row"
else
    echo "== the replay passes: the input is a regression case from now on"
fi

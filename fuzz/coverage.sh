#!/usr/bin/env bash
# Line coverage of codec/src from replaying the committed corpus:
# fuzz/coverage.sh [extra cargo-llvm-cov arguments, e.g. --html]
#
# Runs only the stable replay test (check/tests/fuzz_replay.rs) under
# cargo-llvm-cov, so the figure is what the corpus alone exercises, not the
# unit tests; `-p sessionwire` puts the codec's files in the report. Needs `cargo install cargo-llvm-cov --locked` and
# `rustup component add llvm-tools-preview` (both are installed if missing).
# Prints the per-file table and the line coverage of the decoding modules
# (message/, polling.rs, varint.rs, parse.rs), of the MQTT packet codec
# (mqtt/*.rs) and, apart, of the MQTT session layer (mqtt/session/).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

command -v cargo-llvm-cov >/dev/null 2>&1 || cargo install cargo-llvm-cov --locked
rustup component list --installed 2>/dev/null | grep -q '^llvm-tools' ||
    rustup component add llvm-tools-preview

report="$(mktemp)"
cargo llvm-cov -p sessionwire-check -p sessionwire --test fuzz_replay --summary-only "$@" |
    tee "$report"

# Lines columns of the summary table: Filename ... Lines Missed-Lines Cover ...
awk '
    /^(codec\/src\/)?(message\/|polling\.rs|varint\.rs|parse\.rs)/ { lines += $8; missed += $9 }
    END {
        if (lines > 0)
            printf "decoding modules (message/, polling.rs, varint.rs, parse.rs): %d of %d lines, %.2f%%\n",
                lines - missed, lines, 100 * (lines - missed) / lines
    }
' "$report"
awk '
    /^(codec\/src\/)?mqtt\/session\// { slines += $8; smissed += $9; next }
    /^(codec\/src\/)?mqtt\// { lines += $8; missed += $9 }
    END {
        if (lines > 0)
            printf "MQTT packet codec (mqtt/*.rs): %d of %d lines, %.2f%%\n",
                lines - missed, lines, 100 * (lines - missed) / lines
        if (slines > 0)
            printf "MQTT session layer (mqtt/session/): %d of %d lines, %.2f%%\n",
                slines - smissed, slines, 100 * (slines - smissed) / slines
    }
' "$report"
rm -f "$report"

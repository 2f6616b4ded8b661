#!/usr/bin/env bash
# Every benchmark, one table: each line the median of repetitions with min and max, the
# baseline measured in the same run doing the same work, the ratio of the two, and the goal it
# is held to with whether it is met. Release builds; Linux (the acquisition part reads /proc).
#
#   scripts/bench-table.sh            # about 10 minutes on 2 cores after the build
#   QUICK=1 scripts/bench-table.sh    # acquisition measured once for 10 s instead of 3 x 20 s
#
# The table is also kept as tab-separated values in target/bench-table.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
table="$PWD/target/bench-table.tsv"
mkdir -p target
: >"$table"
# Not CYCLERD__*: the daemon reads every such variable as a configuration key.
export BENCH_TABLE_TSV="$table"

cargo build --release -q -p cyclerd-cli --bin cyclerd --bin cyclerctl -p cyclerhub --bin cyclerhub
for b in "cyclerd-drivers devices" "cyclerd-protocols protocols" "cyclerhub ingest" "cyclerhub http" "cyclerd-cli pipeline"; do
    set -- $b
    echo "== cargo bench -p $1 --bench $2" >&2
    cargo bench -q -p "$1" --bench "$2" >&2
done
echo "== scripts/bench-acquisition.sh" >&2
# The release binaries just built, wherever CARGO_TARGET_DIR put them.
export BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
if [[ -n ${QUICK:-} ]]; then
    scripts/bench-acquisition.sh 64 10 1 >&2
else
    scripts/bench-acquisition.sh 64 20 3 >&2
fi

echo
echo "cyclerd benchmark table, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, commit $(git rev-parse --short HEAD)"
echo
{
    printf 'part\twhat\tmeasured: median (min-max, n)\tunit\tbaseline (same run)\tbaseline: median (min-max)\tratio\tgoal\tmet\n'
    cat "$table"
} | column -t -s $'\t'
echo
goals=$(awk -F'\t' '$9 == "yes" || $9 == "NO"' "$table" | wc -l)
missed=$(awk -F'\t' '$9 == "NO"' "$table" | wc -l)
echo "$((goals - missed)) of $goals goals met"

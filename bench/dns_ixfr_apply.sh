#!/usr/bin/env bash
# Applying a re-signing IXFR (a few thousand RRSIGs replaced) to a big
# signed zone: rebuilding the version from all its records (how IXFRs were
# applied before) against the incremental application (nodes shared,
# indexes patched). Release build, medians.
#
#   bench/dns_ixfr_apply.sh [RECORDS] [RRSIGS] [RUNS]
set -euo pipefail
RECORDS=${1:-150000}
CHURN=${2:-3000}
RUNS=${3:-7}
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 bench/dns_zone_gen.py zone bench.example. "$RECORDS" "$dir/z.zone" >/dev/null
cargo build --release -q -p anyedge-dns --example ixfr_apply
bin=${CARGO_TARGET_DIR:-target}/release/examples/ixfr_apply
for mode in nsec nsec3; do
    "$bin" "$dir/z.zone" bench.example. "$mode" "$CHURN" "$RUNS"
done

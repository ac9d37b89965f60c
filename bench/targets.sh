#!/usr/bin/env bash
# Measures every issue-6 target the way BENCHMARKS.md quotes it: the server pinned to
# CPU 0 (`--server-cpus 0`), the load generator to CPU 1 (`taskset -c 1`), TLS 1.3 with
# the appliance's self-signed ECDSA P-256 certificate, 100-byte bodies, full
# handshakes, throughput as the median of 3 runs of 20 s.
#
#   cargo build --release --bins && bench/targets.sh [OUT_DIR]
#
# Writes one JSON report per measurement (and SVG charts) to OUT_DIR (default
# target/bench-results). Takes about 15 minutes. Every load loop is bounded by the
# tool (durations, counts, deadlines).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench-results}
mkdir -p "$out"
B="taskset -c 1 target/release/switchboard-bench"
S="--server-cpus 0"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== pairs: 100 pairs, window 10"
$B pairs $S --pairs 100 --window 10 --runs 3 --duration 20 \
    --json "$out/pairs-100x10.json" --svg "$out/pairs-100x10.svg"
echo "== pairs: 1,000 pairs, window 10"
$B pairs $S --pairs 1000 --window 10 --runs 3 --duration 20 \
    --json "$out/pairs-1000x10.json"
echo "== pairs: 10 pairs, window 1 (latency)"
$B pairs $S --pairs 10 --window 1 --runs 3 --duration 20 \
    --json "$out/pairs-10x1.json" --svg "$out/pairs-10x1.svg"
for i in 1 2 3; do
    echo "== offline drain, run $i"
    $B offline $S --messages 1000000 --users 1000 --senders 20 \
        --json "$out/offline-$i.json"
done
for i in 1 2 3; do
    echo "== storm, run $i"
    $B storm $S --clients 10000 --keys "$work/storm-$i.keys" \
        --json "$out/storm-$i.json" --svg "$out/storm-$i.svg"
done
# Connections: register once (the first run), then three measured runs log in with the
# saved keys against the same data directory.
$B connect $S --clients 10000 --keys "$work/c10k.keys" --server-data "$work/c10k" \
    --hold 2 --json "$out/connect-10k-register.json"
for i in 1 2 3; do
    echo "== connect 10k, run $i"
    $B connect $S --clients 10000 --keys "$work/c10k.keys" --server-data "$work/c10k" \
        --hold 5 --json "$out/connect-10k-$i.json"
done
# 100,000 connections: a process holds at most ~19,900 descriptors here, so the server
# runs as one router and seven gateway processes sharing the port, and the load
# generator as seven children on 127.0.0.2-8.
$B connect $S --gateways 7 --clients 100000 --per-child 15000 \
    --keys "$work/c100k.keys" --server-data "$work/c100k" \
    --hold 2 --json "$out/connect-100k-register.json"
for i in 1 2; do
    echo "== connect 100k, run $i"
    $B connect $S --gateways 7 --clients 100000 --per-child 15000 \
        --keys "$work/c100k.keys" --server-data "$work/c100k" \
        --hold 10 --json "$out/connect-100k-$i.json"
done
echo "results in $out"

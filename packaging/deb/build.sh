#!/usr/bin/env bash
# Builds the .deb: release binaries, the tuning profile rendered for the package, then
# cargo-deb (installed here if missing). Prints the path of the package.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${SWITCHBOARD_PROFILE:-linux-1m}
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked >&2
cargo build --release --bins >&2
mkdir -p target/packaging
target/release/switchboard tune render "$profile" --format sysctl.d > target/packaging/60-switchboard.conf
target/release/switchboard tune render "$profile" --format limits > target/packaging/switchboard-limits.conf
cargo deb -p switchboard --no-build --no-strip --output target/debian/ 2>&1 | tail -1

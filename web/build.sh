#!/usr/bin/env bash
# Builds the page into web/pkg/: the wasm32 library (release) and its JavaScript bindings.
# Needs the wasm32-unknown-unknown target (rustup target add wasm32-unknown-unknown) and the
# wasm-bindgen CLI of the version Cargo.lock holds (installed here when missing or different).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$version" ]; then
    # Without its default TLS stack (only its test runner downloads anything), and unoptimised:
    # it compiles in 159 s instead of 375 s on 2 cores and writes the same files (0.7 s here).
    cargo install --quiet --debug wasm-bindgen-cli --version "$version" --no-default-features
fi
RUSTFLAGS="-D warnings" cargo build --quiet -p supcon-web --target wasm32-unknown-unknown --release
target=${CARGO_TARGET_DIR:-target}
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
    "$target/wasm32-unknown-unknown/release/supcon_web.wasm"
echo "built web/pkg/ (wasm-bindgen $version)"

#!/usr/bin/env bash
# The C ABI's embedded paths from C programs (pubsub.c, request_reply.c), against the
# release build of libringbroker.a, in a temporary data directory each run:
#   benches/c/run.sh [--runs N] [--idle-spin-us US]   (default 3 runs of each; the
#                                         shards' idle spin, default 0)
# docs/benchmarks.md ("C ABI") quotes its output. The library's own criterion
# benchmark is `cargo bench -p ringbroker-ffi --bench abi`.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --idle-spin-us) export IDLE_SPIN_US="$2"; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--idle-spin-us US]" >&2; exit 2 ;;
  esac
done
cargo build -q --release -p ringbroker-ffi
lib="${CARGO_TARGET_DIR:-target}/release/libringbroker.a"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for prog in pubsub request_reply; do
  cc -std=c11 -O2 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -Iinclude -Ibenches/c \
    "benches/c/$prog.c" "$lib" -lpthread -ldl -lm -o "$work/$prog"
done
for i in $(seq "$runs"); do
  "$work/pubsub" "$work/ps-$i"
  "$work/request_reply" "$work/rr-$i"
done

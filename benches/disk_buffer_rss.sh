#!/usr/bin/env bash
# The issue's 2 GB disk-buffer backlog (tests/disk_buffers.rs runs 100 MB in
# CI): fills a sink's disk buffer behind a service taking one event a
# second, kills the daemon, replays everything into a file, and requires
# peak RSS under 100 MB in both phases. Release build; needs ~2.5 GB free
# under the temporary directory. Usage: benches/disk_buffer_rss.sh [MB]
set -euo pipefail
cd "$(dirname "$0")/.."
DISK_BUFFER_BACKLOG_MB="${1:-2048}" cargo test --release --test disk_buffers \
  a_large_backlog_fills_and_replays_in_bounded_memory -- --nocapture

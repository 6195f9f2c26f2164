#!/usr/bin/env bash
# The rollout model test at scale: 10,000 random farms (or $1), each rolled out
# on the local transport, some killed with kill -9 and applied again, judged
# by the hosts' own log (tests/rollout_model.rs). The suite runs 500.
set -euo pipefail
cd "$(dirname "$0")/.."
FARMCTL_MODEL_FARMS="${1:-10000}" cargo test --locked --test rollout_model -- --nocapture

#!/usr/bin/env bash
# The benchmark: farmctl against the OpenSSH floor and Ansible on a lab farm of
# real sshd hosts, then the planner at scale. Needs root (the lab farm) and
# installs Ansible into bench/.venv with pip when it is missing.
#
#   bash bench/run.sh                        # 10, 50 and 100 hosts; 3 runs each
#   HOSTS=10,50 RUNS=5 bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=${HOSTS:-10,50,100}
RUNS=${RUNS:-3}
[ -x /usr/sbin/sshd ] && command -v unshare >/dev/null || bash scripts/test.sh --no-run >/dev/null
if [ ! -x bench/.venv/bin/ansible-playbook ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install --quiet ansible-core
fi
echo "## Machine"
echo
echo "- $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(uname -sr); $(ssh -V 2>&1); $(bench/.venv/bin/ansible-playbook --version | head -1)"
echo
echo "## farmctl, the OpenSSH floor and Ansible (medians of $RUNS runs; Ansible at most 3)"
echo
cargo bench --quiet --bench farm -- --hosts "$HOSTS" --runs "$RUNS" --ansible bench/.venv/bin/ansible-playbook
echo
echo "## A rollout: canary 1, waves 25% and 100%, a 1 s upgrade, 2 gate samples 0.5 s apart (medians of $RUNS runs)"
echo
cargo bench --quiet --bench rollout -- --hosts "${ROLLOUT_HOSTS:-50}" --runs "$RUNS" --ansible bench/.venv/bin/ansible-playbook
echo
echo "## Failover: kills of the active member, heartbeat 250 ms, dead_after 1 s"
echo
cargo bench --quiet --bench failover -- --clients "${FAILOVER_CLIENTS:-50}" --kills "${KILLS:-20}"
echo
echo "## The planner at scale"
echo
cargo bench --quiet --bench planner

#!/usr/bin/env bash
# The benchmark: farmctl against the OpenSSH floor, Ansible and pyinfra on a lab
# farm of real sshd hosts, the switch with one-way delays, then the planner at
# scale. Needs root (the lab farm) and installs Ansible and pyinfra into
# bench/.venv with pip when they are missing.
#
#   bash bench/run.sh                        # 10, 50 and 100 hosts; 3 runs each
#   HOSTS=10,50 RUNS=5 bash bench/run.sh
#   BIG=200 bash bench/run.sh                # and farmctl alone at 200 hosts
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=${HOSTS:-10,50,100}
RUNS=${RUNS:-3}
[ -x /usr/sbin/sshd ] && command -v unshare >/dev/null || bash scripts/test.sh --no-run >/dev/null
[ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv
[ -x bench/.venv/bin/ansible-playbook ] || bench/.venv/bin/pip install --quiet ansible-core
[ -x bench/.venv/bin/pyinfra ] || bench/.venv/bin/pip install --quiet pyinfra
echo "## Machine"
echo
echo "- $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(uname -sr); $(ssh -V 2>&1); $(bench/.venv/bin/ansible-playbook --version | head -1); pyinfra $(bench/.venv/bin/pip show pyinfra | sed -n 's/^Version: //p')"
echo
echo "## farmctl, the OpenSSH floor, Ansible and pyinfra (medians of $RUNS runs; Ansible and pyinfra at most 3)"
echo
cargo bench --quiet --bench farm -- --hosts "$HOSTS" --runs "$RUNS" --ansible bench/.venv/bin/ansible-playbook --pyinfra bench/.venv/bin/pyinfra
echo
echo "## The scheduled switch at ${SWITCH_HOSTS:-50} hosts, one-way delays spread from 0 to 150 ms (medians of $RUNS runs)"
echo
cargo bench --quiet --bench farm -- --hosts "${SWITCH_HOSTS:-50}" --runs "$RUNS" --delays 150 --only-switch
if [ -n "${BIG:-}" ]; then
  echo
  echo "## farmctl alone at $BIG hosts (Ansible and pyinfra take minutes a run there)"
  echo
  cargo bench --quiet --bench farm -- --hosts "$BIG" --runs "$RUNS"
fi
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

#!/usr/bin/env bash
# Install a local SLURM (Debian's slurm-wlm) and munge for the SLURM integration tests
# (tests/test_slurm_cluster.py, helper tests/slurm_cluster.py).
#
# Idempotent: does nothing when the daemons and clients are already on PATH. Needs root
# (apt-get); without root it only prints what to do and exits 0, so the tests skip.
# The packages' own services are NOT used: the tests start private daemons with their own
# config, key, sockets and ports under a temporary directory.
set -euo pipefail

# Debian puts the daemons in /usr/sbin, which a non-login shell may not have on PATH.
export PATH="$PATH:/usr/sbin:/sbin"

_version() {
    dpkg-query -W -f='slurm ${Version}' slurm-client 2>/dev/null || echo "unknown version"
}

need=(slurmctld slurmd munged sbatch)
missing=()
for b in "${need[@]}"; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if [ ${#missing[@]} -eq 0 ]; then
    # (not `sbatch --version`: without a slurm.conf it fails trying DNS SRV config lookup)
    echo "install_slurm.sh: SLURM and munge already installed ($(_version))"
    exit 0
fi

if [ "${EUID:-$(id -u)}" -ne 0 ]; then
    echo "install_slurm.sh: missing ${missing[*]}; not root, so not installing." >&2
    echo "  As root run: apt-get install --no-install-recommends slurm-wlm munge" >&2
    echo "  The SLURM integration tests will be skipped." >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# The packages' services must not start (the tests run private daemons): a policy-rc.d
# that forbids starting any, for the duration of the install, unless one exists already.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
# slurm-wlm is a metapackage pulling slurmctld, slurmd and slurm-client; listing them
# explicitly keeps the install working even if recommends/metapackage contents change.
if apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    slurm-wlm slurmctld slurmd slurm-client munge; then
    echo "install_slurm.sh: installed $(_version)"
else
    echo "install_slurm.sh: WARNING: apt-get could not install slurm-wlm and munge;" >&2
    echo "  the SLURM integration tests will be skipped (pytest -ra says why)." >&2
fi

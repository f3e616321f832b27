#!/usr/bin/env bash
# Run a command in one of the project's images with podman, daemonless and without a network.
#
# Usage: engine/images/run.sh IMAGE [COMMAND...]     e.g. engine/images/run.sh virality-caffe:cpu make test
#
# What it takes to run on a machine like ours (a KVM VM, root, cgroup v1 with a tmpfs root):
#   --runtime runc     Debian 12's crun 1.8 stops with "cgroups in hybrid mode not supported";
#   --ulimit nofile/nproc at or below this shell's hard limits: podman's defaults (1048576 open
#                      files, and its own process limit) are above them, and the runtime's
#                      setrlimit then fails with "Operation not permitted";
#   --network none     nothing the tests need comes from a network (the image holds it all).
# Settings: PODMAN_RUNTIME (default runc), PODMAN_RUN_ARGS (more podman run arguments, e.g.
#   "--gpus all" or "-v $PWD/data:/opt/virality-caffe/data").
set -euo pipefail
image="${1:?usage: engine/images/run.sh IMAGE [COMMAND...]}"; shift
nofile="$(ulimit -Hn)"; nproc="$(ulimit -Hu)"
# podman itself counts against the process limit: stay well below the hard one (32768 at most).
[[ "$nproc" == "unlimited" || "$nproc" -gt 32768 ]] && nproc=32768
[[ "$nofile" == "unlimited" || "$nofile" -gt 1048576 ]] && nofile=1048576
tty=(); [[ -t 0 && -t 1 ]] && tty=(-it)
# shellcheck disable=SC2086
exec podman ${PODMAN_STORAGE_DRIVER:+--storage-driver "$PODMAN_STORAGE_DRIVER"} run --rm "${tty[@]}" \
    --runtime "${PODMAN_RUNTIME:-runc}" --network none \
    --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" ${PODMAN_RUN_ARGS:-} "$image" "$@"

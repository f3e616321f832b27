#!/usr/bin/env bash
# Connect the project's Python environment to the built engine:
#   - a .pth file so that .venv/bin/python imports `caffe` (from .engine) and the
#     project's packages (`virality`, `python_layers`) without PYTHONPATH tweaks;
#   - .venv/bin/caffe, Caffe's command-line tool, whose embedded Python sees the
#     same packages, so Python layers work from `caffe train` as from pycaffe.
# Usage: engine/link_env.sh VENV_DIR ENGINE_LINK
set -euo pipefail
VENV="$(cd "$1" && pwd)"
ENGINE="$2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -x "$ENGINE/bin/caffe" ]] || { echo "link_env.sh: $ENGINE/bin/caffe not found; run 'make caffe'" >&2; exit 1; }
ENGINE="$(cd "$(dirname "$ENGINE")" && pwd)/$(basename "$ENGINE")"

site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n' "$ENGINE/lib/python3/dist-packages" "$ROOT" > "$site/virality_caffe.pth"

cat > "$VENV/bin/caffe.tmp" <<WRAPPER
#!/bin/sh
# Caffe's command-line tool with the project's Python environment (made by engine/link_env.sh).
# Its Python layers import from the project root, the engine's pycaffe and the venv.
PYTHONPATH="$ROOT:$ENGINE/lib/python3/dist-packages:$site\${PYTHONPATH:+:\$PYTHONPATH}"
export PYTHONPATH
# OpenBLAS's idle threads sleep at once instead of spinning for 0.1 s, leaving the
# cores to Caffe's own CPU threads (engine patch 0005; docs/ENGINE.md). A value set
# by the caller wins.
OPENBLAS_THREAD_TIMEOUT="\${OPENBLAS_THREAD_TIMEOUT:-4}"
export OPENBLAS_THREAD_TIMEOUT
exec "$ENGINE/bin/caffe" "\$@"
WRAPPER
chmod +x "$VENV/bin/caffe.tmp"
mv -f "$VENV/bin/caffe.tmp" "$VENV/bin/caffe"

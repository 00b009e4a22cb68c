# Sourced by the shell launchers (tools/dist_*.sh, tools/slurm_*.sh,
# tools/analysis/gpu_check.sh): PYTHON is kept if set, else the repo's
# .venv/bin/python (made by `make install`) if present, else `python`.
if [ -z "${PYTHON:-}" ]; then
    PYTHON="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python"
    [ -x "$PYTHON" ] || PYTHON=python
fi

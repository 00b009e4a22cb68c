# Sourced by the shell launchers (tools/dist_*.sh, tools/slurm_*.sh,
# tools/analysis/gpu_check.sh): PYTHON is kept if set, else the repo's
# .venv/bin/python (made by `make install`) if present, else `python`.
if [ -z "${PYTHON:-}" ]; then
    PYTHON="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python"
    [ -x "$PYTHON" ] || PYTHON=python
fi
# The clone goes on PYTHONPATH only when $PYTHON cannot import lors_det: an
# installed lors_det (pip install ., editable or not) is used as installed,
# never shadowed by the clone the script happens to live in.
if ! "$PYTHON" -c 'import sys, importlib.util as u; sys.path.pop(0); sys.exit(u.find_spec("lors_det") is None)' 2>/dev/null; then
    export PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
fi

#!/usr/bin/env bash
# Install the pinned lors_det stack into a virtual environment.
#
#   bash tools/misc/install.sh [VENV]          (default VENV: .venv)
#   bash tools/misc/install.sh --plan [VENV]   print where mmcv would come from
#
# mmcv 2.1.0 has no prebuilt wheel for torch 2.1.2 / Python 3.11, so it is
# compiled once against the installed torch and cached outside the repo in
#   ${LORS_DET_CACHE:-~/.cache/lors_det}/wheels/torch<ver>-cp<py>/
# pip's own cache is never trusted for mmcv: it may serve a wheel compiled
# against another torch (undefined-symbol errors at import).  A prebuilt
# wheel for exactly this stack is taken from LORS_DET_PREBUILT_WHEELS (default
# ../shared/wheels/torch2.1.2-cp311 next to the repo) when that folder exists.
#
# Every pip call is constrained by requirements/constraints.txt (the versions
# tested), and a copy of it is written into the venv's pip.conf, so a later
# `pip install SOMETHING` in the venv (openmim, jupyter, ...) cannot move
# torch, numpy, mmcv, mmengine or mmdet.
set -euo pipefail

plan_only=0
if [[ "${1:-}" == "--plan" ]]; then plan_only=1; shift; fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${1:-$repo/.venv}"
torch_version=2.1.2
mmcv_version=2.1.0

fail() { echo "install.sh: ERROR: $*" >&2; exit 1; }
step() { echo "install.sh: $*"; }

python_bin="${PYTHON:-python3}"
py_tag="cp$("$python_bin" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')" \
    || fail "cannot run '$python_bin'; set PYTHON to a Python 3.11 interpreter"
cache_dir="${LORS_DET_CACHE:-$HOME/.cache/lors_det}/wheels/torch${torch_version}-${py_tag}"
prebuilt_dir="${LORS_DET_PREBUILT_WHEELS-$repo/../shared/wheels/torch${torch_version}-${py_tag}}"
wheel_glob="mmcv-${mmcv_version}-${py_tag}-${py_tag}-*.whl"

find_wheel() { compgen -G "$1/$wheel_glob" | head -n 1 || true; }

mmcv_source() {
    if [[ -n "$(find_wheel "$cache_dir")" ]]; then echo "cache $cache_dir"
    elif [[ -n "$prebuilt_dir" && -n "$(find_wheel "$prebuilt_dir")" ]]; then echo "prebuilt $prebuilt_dir"
    else echo "source build into $cache_dir"; fi
}

if (( plan_only )); then echo "mmcv ${mmcv_version}: $(mmcv_source)"; exit 0; fi

if [[ ! -x "$venv/bin/python" ]]; then
    step "creating virtual environment $venv"
    "$python_bin" -m venv "$venv" || fail "could not create $venv (is python3-venv installed?)"
fi
venv="$(cd "$venv" && pwd)"  # pip.conf needs an absolute path
constraints="$repo/requirements/constraints.txt"
[[ -f "$constraints" ]] || fail "missing $constraints"
# pip reads <venv>/pip.conf after the user's and the machine's config; its
# `constraint` replaces theirs for this venv (PIP_CONSTRAINT still overrides)
step "pinning the venv: $venv/pip.conf -> $venv/lors_det-constraints.txt"
cp "$constraints" "$venv/lors_det-constraints.txt"
cat > "$venv/pip.conf" <<EOF
# written by lors_det's tools/misc/install.sh: every pip install in this venv
# keeps the tested versions (a copy of requirements/constraints.txt)
[global]
constraint = $venv/lors_det-constraints.txt
EOF
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

step "installing torch ${torch_version} and build requirements"
"${pip[@]}" install -q -c "$constraints" -r "$repo/requirements/build.txt" || fail "pip install -r requirements/build.txt failed"

mkdir -p "$cache_dir"
case "$(mmcv_source)" in
    prebuilt*)
        step "copying prebuilt mmcv wheel from $prebuilt_dir"
        if [[ -f "$prebuilt_dir/../SHA256SUMS" ]]; then
            (cd "$prebuilt_dir/.." && sha256sum --quiet -c --ignore-missing SHA256SUMS) \
                || fail "checksum mismatch for the prebuilt wheel in $prebuilt_dir"
        fi
        cp "$(find_wheel "$prebuilt_dir")" "$cache_dir/" ;;
    source*)
        step "building mmcv ${mmcv_version} from source against torch ${torch_version} (about 11 min on 2 cores)"
        MAX_JOBS="${MAX_JOBS:-2}" "${pip[@]}" wheel --no-build-isolation --no-deps --no-cache-dir \
            -c "$constraints" -w "$cache_dir" "mmcv==${mmcv_version}" || fail "building mmcv ${mmcv_version} failed" ;;
esac
wheel="$(find_wheel "$cache_dir")"
[[ -n "$wheel" ]] || fail "no mmcv wheel in $cache_dir after build"

step "installing $(basename "$wheel") and the runtime/test requirements"
"${pip[@]}" install -q --no-deps "$wheel" || fail "installing $wheel failed"
"${pip[@]}" install -q -c "$constraints" -r "$repo/requirements/mminstall.txt" \
    -r "$repo/requirements/runtime.txt" -r "$repo/requirements/tests.txt" \
    || fail "pip install of requirements/{mminstall,runtime,tests}.txt failed"
"${pip[@]}" install -q --no-deps --no-build-isolation -e "$repo" || fail "pip install -e . failed"

step "checking the stack imports"
"$venv/bin/python" - <<'EOF' || fail "import check failed: the cached mmcv wheel may not match torch; delete it and rerun"
import numpy, torch, mmcv, mmengine, mmdet
from mmcv.ops import nms  # compiled ops load against this torch
import mmdet.models  # noqa: F401
import lors_det  # noqa: F401
assert torch.__version__.startswith('2.1.2'), torch.__version__
assert mmcv.__version__ == '2.1.0', mmcv.__version__
assert numpy.__version__.startswith('1.'), numpy.__version__
print(f'install.sh: ok: torch {torch.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmdet {mmdet.__version__}')
EOF

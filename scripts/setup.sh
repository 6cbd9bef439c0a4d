#!/usr/bin/env bash
# Set up an environment for medsegloss on a machine with nothing but python3.
#   scripts/setup.sh run   -> the package + what `medsegloss bench` needs
#   scripts/setup.sh test  -> the above + pytest, Hypothesis, nnU-Net v2 and the peer libraries the tests compare against
# Uses the active virtual environment if there is one, else creates .venv/.
# Installs the CPU pin torch==2.13.0 only where torch is missing: an unpinned torch would pull a
# multi-GB CUDA build, and a user's own torch (CUDA or not) must be kept.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-run}"

if [ -n "${VIRTUAL_ENV:-}" ]; then
    python="$VIRTUAL_ENV/bin/python"
else
    [ -x .venv/bin/python ] || python3 -m venv .venv
    python=.venv/bin/python
fi

stamp=".venv-stamp-$what"
[ -n "${VIRTUAL_ENV:-}" ] && stamp="$VIRTUAL_ENV/.medsegloss-stamp-$what"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/setup.sh ]; then
    exit 0
fi

pip() { "$python" -m pip --disable-pip-version-check -q "$@"; }
"$python" -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
# every later install keeps the torch that is there now (nnunetv2 would otherwise pull a CUDA build)
keep_torch="$(mktemp)"; trap 'rm -f "$keep_torch"' EXIT
"$python" -c "import torch; print('torch==' + torch.__version__)" > "$keep_torch"
case "$what" in
    run)  pip install -c "$keep_torch" -e ".[experiment]" ;;
    test) # the nnunet extra: the nnU-Net v2 trainer integration is tested end to end; pandas and
          # tensorboard: the Python API's DataFrames and --log tensorboard's event files are tested
          pip install -c "$keep_torch" -e ".[test,experiment,peers,nnunet,pandas,tensorboard]"
          # smp's losses are compared against; its networks (--model smp:...) need timm and a torchvision
          # matching the CPU torch, which the registry here does not offer, so those tests skip here
          pip install --no-deps "segmentation-models-pytorch>=0.3" ;;
    *) echo "usage: scripts/setup.sh [run|test]" >&2; exit 2 ;;
esac
# The MNI152 template and tissue maps ship inside nilearn's wheel; only its data files are read,
# so its own dependencies are not installed.
pip install --no-deps "nilearn>=0.10"
touch "$stamp"

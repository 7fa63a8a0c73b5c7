#!/usr/bin/env bash
# Creates or reuses the project's virtual environments inside the repo:
#   .venv        the pinned MXNet stack, gluoncv (reference only), pytest, Horovod 0.28.1 built from source (MXNet+Gloo)
#   .venv-torch  the same MXNet stack plus PyTorch (CPU) and timm, for weight conversion and timm parity
# Usage: tools/setup_env.sh [main|torch|all]   (default: all)
# Idempotent: each environment records a hash of its inputs and is rebuilt only when they change,
# so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
HOROVOD_VERSION=0.28.1
what=${1:-all}

log() { printf '[setup_env] %s\n' "$*" >&2; }

inputs_hash() {  # hash of the files that define an environment
  cat "$@" setup.py pyproject.toml tools/setup_env.sh | sha1sum | cut -c1-40
}

make_venv() {  # make_venv DIR
  local dir=$1
  if [ ! -x "$dir/bin/python" ]; then
    log "creating $dir with $($PYTHON --version)"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --upgrade "pip==24.3.1"
  fi
}

check_horovod() {  # succeeds when Horovod in .venv has MXNet and Gloo
  local out
  out=$(.venv/bin/horovodrun --check-build 2>/dev/null) || return 1
  grep -q '\[X\] MXNet' <<<"$out" && grep -q '\[X\] Gloo' <<<"$out"
}

setup_main() {
  local want have
  want=$(inputs_hash requirements.txt requirements-dev.txt requirements-deploy.txt)
  have=$(cat .venv/.inputs-sha1 2>/dev/null || true)
  if [ "$want" = "$have" ]; then  # the stamp is written only after horovodrun --check-build passed
    log ".venv is up to date"; return 0
  fi
  make_venv .venv
  log "installing the pinned stack into .venv"
  .venv/bin/pip install --quiet -r requirements-dev.txt
  .venv/bin/pip install --quiet --no-deps --no-build-isolation -e .
  if ! check_horovod || ! .venv/bin/pip show horovod 2>/dev/null | grep -q "^Version: $HOROVOD_VERSION$"; then
    log "building horovod==$HOROVOD_VERSION from source against MXNet with Gloo (a few minutes)"
    HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_CPU_OPERATIONS=gloo MAKEFLAGS="-j$(nproc)" \
      .venv/bin/pip install --quiet --no-build-isolation --no-cache-dir "horovod==$HOROVOD_VERSION"
  fi
  if ! check_horovod; then
    log "ERROR: horovodrun --check-build does not list MXNet and Gloo:"; .venv/bin/horovodrun --check-build >&2 || true
    exit 1
  fi
  echo "$want" > .venv/.inputs-sha1
  log ".venv ready"
}

setup_torch() {
  local want have
  want=$(inputs_hash requirements.txt requirements-torch.txt requirements-deploy.txt)
  have=$(cat .venv-torch/.inputs-sha1 2>/dev/null || true)
  if [ "$want" = "$have" ]; then
    log ".venv-torch is up to date"; return 0
  fi
  make_venv .venv-torch
  log "installing MXNet + torch (CPU) + timm into .venv-torch"
  .venv-torch/bin/pip install --quiet -r requirements-torch.txt
  .venv-torch/bin/pip install --quiet --no-deps --no-build-isolation -e .
  .venv-torch/bin/python -c "import torch, timm, mxnet; print('torch', torch.__version__, 'timm', timm.__version__, 'mxnet', mxnet.__version__)" >&2
  echo "$want" > .venv-torch/.inputs-sha1
  log ".venv-torch ready"
}

case "$what" in
  main) setup_main ;;
  torch) setup_torch ;;
  all) setup_main; setup_torch ;;
  *) echo "usage: $0 [main|torch|all]" >&2; exit 2 ;;
esac

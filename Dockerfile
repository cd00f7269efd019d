# The production image: Ray's LLM image (Ray, the exact vLLM that Ray's `llm` extra pins, CUDA, Python 3.11) plus
# this project. The base's packages are frozen as constraints first, so installing ours never moves Ray, vLLM or
# torch: a dependency that would need another version fails the build instead of breaking `import ray.serve.llm`.
#   docker build -t ghcr.io/your-org/ray-rag:0.1.0 . && docker push ghcr.io/your-org/ray-rag:0.1.0
ARG RAY_VERSION=2.60.0
FROM rayproject/ray-llm:${RAY_VERSION}-py311-cu128

# Relative paths in the Serve config and the ingest job (configs/gpu.yaml) resolve here: KubeRay and the cluster
# launcher start Ray in the image's working directory, and Ray's workers inherit it.
WORKDIR /home/ray/rag
# Tesseract with its English data: OCR of scanned PDF pages (parse.ocr: auto).
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
 && rm -rf /var/lib/apt/lists/*
USER ray
COPY --chown=ray:users pyproject.toml ./
RUN pip list --format=freeze > /tmp/base-constraints.txt \
 && python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(d for d in deps if not d.startswith(('ray[', 'ray=', 'ray>'))))" > /tmp/project-deps.txt \
 && pip install --no-cache-dir -c /tmp/base-constraints.txt -r /tmp/project-deps.txt
COPY --chown=ray:users rag rag
COPY --chown=ray:users ingest_jobs ingest_jobs
COPY --chown=ray:users serve_app serve_app
COPY --chown=ray:users evaluation evaluation
COPY --chown=ray:users entrypoints entrypoints
COPY --chown=ray:users configs configs
RUN pip install --no-cache-dir --no-deps . \
 && python -c "import ray, vllm, ray.serve.llm, serve_app.app, ingest_jobs.ingest; print('ray', ray.__version__, 'vllm', vllm.__version__)"

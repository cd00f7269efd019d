# The two commands a newcomer needs: `make demo` and `make test`. Both install first.
PY := .venv/bin/python
# Subprocesses (ray job entrypoints, serve, rag) find the project's interpreter first.
export PATH := $(CURDIR)/.venv/bin:$(PATH)
CORPUS ?= docs
CONFIG ?= configs/local.yaml

.PHONY: install demo ingest serve test bench-ingest bench-serve milvus-stop

.venv/.installed: pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh
	touch $@

install: .venv/.installed

ingest: install
	.venv/bin/rag ingest $(CORPUS) --config $(CONFIG)

demo: install
	.venv/bin/rag demo --corpus $(CORPUS) --config $(CONFIG)

serve: install  # Ray and Serve set up as `rag demo` does (serve_app/serve_config.py RAY_START_ENV, SERVE_ENV)
	RAY_worker_niceness=0 RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_ENABLE_DIRECT_INGRESS=0 .venv/bin/serve run configs/serve_local.yaml

test: install
	$(PY) -m pytest

bench-ingest: install
	$(PY) bench/ingest.py

bench-serve: install
	$(PY) bench/serve.py

milvus-stop:
	.venv/bin/rag milvus stop --config $(CONFIG)

# The two commands a newcomer needs: `make demo` and `make test`. Both install first.
PY := .venv/bin/python
# Subprocesses (ray job entrypoints, serve, rag) find the project's interpreter first.
export PATH := $(CURDIR)/.venv/bin:$(PATH)
CORPUS ?= docs
CONFIG ?= configs/local.yaml
# Ray's own CLIs (serve status, serve shutdown, ray job submit, ray job logs) send the local cluster's token
# (~/.ray/auth_token) only with RAY_AUTH_MODE=token, and the clusters this project starts use token auth.
export RAY_AUTH_MODE := token

.PHONY: install demo chat ingest serve stop test test-unit lint bench-ingest bench-serve milvus-stop

.venv/.installed: pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh
	touch $@

install: .venv/.installed

ingest: install
	.venv/bin/rag ingest $(CORPUS) --config $(CONFIG)

demo: install
	.venv/bin/rag demo --corpus $(CORPUS) --config $(CONFIG)

chat: install  # the demo, left serving: its chat page at http://127.0.0.1:8000/ until Ctrl-C
	.venv/bin/rag demo --corpus $(CORPUS) --config $(CONFIG) --keep-serving

# A local Ray cluster started as a cluster's nodes are (with the env of entrypoints/local_ray.py RAY_START_ENV and
# serve_app/serve_yaml.py SERVE_ENV), the local milvus-lite server, $(CORPUS) ingested on that cluster into the config's
# collection, the Serve app deployed with `serve deploy`, then wait until /readyz says every part answers.
serve: install
	.venv/bin/ray get-auth-token --generate > /dev/null
	.venv/bin/ray status > /dev/null 2>&1 || RAY_worker_niceness=0 RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_ENABLE_DIRECT_INGRESS=0 .venv/bin/ray start --head --num-cpus=4 --disable-usage-stats
	.venv/bin/rag milvus start --config configs/local.yaml  # the app's build, in a Ray worker, starts no Milvus
	.venv/bin/rag ingest $(CORPUS) --config configs/local.yaml  # what it serves; unchanged documents are skipped
	.venv/bin/serve deploy configs/serve_local.yaml
	.venv/bin/rag ready --config configs/local.yaml  # the config serve_local.yaml deploys: its API key, if any

stop:
	-.venv/bin/serve shutdown -y
	.venv/bin/ray stop
	.venv/bin/rag milvus stop --config $(CONFIG)

test: install
	$(PY) -m pytest

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test-unit: install  # no Ray, Milvus server or vLLM started: config, parsing, fusion, prompts, errors, manifests
	$(PY) -m pytest -m "not integration"

bench-ingest: install
	$(PY) bench/ingest.py

bench-serve: install
	$(PY) bench/serve.py

milvus-stop:
	.venv/bin/rag milvus stop --config $(CONFIG)

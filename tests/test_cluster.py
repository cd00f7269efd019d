"""The manifests' own commands on a real multi-node Ray cluster: a head started with ``ray start --head`` and two
more nodes with ``ray start --address=...``, all on this machine, with Ray's token authentication as KubeRay sets
it up. The RayJob's entrypoint runs through ``ray job submit``, the RayService's serveConfigV2 deploys with
``serve deploy``, Serve's CLIs answer, and the RAG metrics reach the nodes' Prometheus endpoints. Only the config
file and the corpus location are swapped for local ones: the config file by the entrypoint's ``--config`` and the
Serve args' ``config_file``, the corpus by ``--corpus``."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI

from rag.config import RagConfig
from rag.store import MilvusChunkStore
from tests.conftest import REPO, copy_pages, free_port

PAGES = ["adminGuide/chunk_cache.html", "adminGuide/rbac.html", "faq/performance_faq.html"]
SERVE_PORT = 8000  # serveConfigV2's own http_options; every node's proxy shares it (Serve sets SO_REUSEPORT)
BIN = Path(sys.executable).parent
METRICS_REPORT_S = 2


class RayCluster:
    """``ray start --block`` processes: stopping them stops exactly this cluster's nodes (``ray stop`` would stop
    every Ray on the machine, the test session's own cluster included)."""

    def __init__(self, tmp: Path):
        self.token = secrets.token_hex(32)
        # What KubeRay puts in every pod with authOptions.mode token; clients need the same two variables.
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            # Ray's processes export metrics every 10 s by default; the metrics test waits for two exports.
            "RAY_metrics_report_interval_ms": str(METRICS_REPORT_S * 1000),
            # The whole cluster stops at once at the end: a node draining for the others only waits (the head,
            # which never finishes its drain, for 30 s).
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.metrics_ports: list[int] = []
        self.nodes: list[subprocess.Popen] = []
        self.node_args: list[tuple[str, ...]] = []
        self.logs = tmp

    def start_node(self, *args: str) -> None:
        self.node_args.append(args)
        metrics = free_port()
        self.metrics_ports.append(metrics)
        log = open(self.logs / f"node{len(self.nodes)}.log", "w")
        self.nodes.append(
            subprocess.Popen(
                [
                    str(BIN / "ray"),
                    "start",
                    "--block",
                    "--disable-usage-stats",
                    f"--metrics-export-port={metrics}",
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--dashboard-agent-grpc-port={free_port()}",
                    f"--runtime-env-agent-port={free_port()}",
                    *args,
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,  # cwd: the image's WORKDIR on a cluster
            )
        )

    def cli(self, *argv: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert not check or result.returncode == 0, f"{argv}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    def alive_nodes(self) -> int:
        listed = self.cli("ray", "list", "nodes", "--format", "json", "--address", self.dashboard, check=False)
        if listed.returncode != 0 or not listed.stdout.startswith("["):  # e.g. "No resource in the cluster"
            return 0
        return sum(n["state"] == "ALIVE" for n in json.loads(listed.stdout))

    def wait_for_nodes(self, n: int, timeout_s: float = 180, attempts: int = 3) -> None:
        """Until ``n`` nodes are alive; a node whose ``ray start`` exited meanwhile is started again."""
        deadline = time.monotonic() + timeout_s
        while self.alive_nodes() < n:
            node = self.nodes[-1]
            if node.poll() is not None:
                assert attempts > 1, f"node {len(self.nodes) - 1} did not start: see {self.logs}"
                self.nodes.pop()
                self.metrics_ports.pop()
                self.start_node(*self.node_args.pop())
                attempts -= 1
            assert time.monotonic() < deadline, f"{n} nodes did not come up: see {self.logs}"
            time.sleep(2)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.terminate()
        for node in reversed(self.nodes):
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
        # `ray start --head` left its address for a later `ray.init()` to join (`ray stop` removes it): remove it,
        # or a `rag ingest` run afterwards waits on this cluster's GCS.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{self.gcs_port}"):
            current.unlink()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[RayCluster]:
    """A head with no CPUs, as in the RayService, and two worker nodes, joined one at a time: on a loaded
    2-core machine a raylet can miss its 30 s start-up deadline, and then that node is started again."""
    c = RayCluster(tmp_path_factory.mktemp("raycluster"))
    try:
        c.start_node(
            "--head",
            f"--port={c.gcs_port}",
            "--num-cpus=0",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={c.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
        )
        c.wait_for_nodes(1)
        for n in (2, 3):
            c.start_node(f"--address=127.0.0.1:{c.gcs_port}", "--num-cpus=2")
            c.wait_for_nodes(n)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def local_config(milvus_uri, smollm2_dir) -> Iterator[str]:
    """The embedded default's config, pointed at the tests' milvus-lite and a collection of its own. Its path
    is relative, as `configs/gpu.yaml` is in the manifests: it resolves in the directory the nodes started in."""
    doc = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    doc["milvus"].update(uri=milvus_uri, collection="cluster_docs", manage_local=False)
    doc["llm"].update(models_dir=str(REPO / ".rag" / "models"), max_tokens=24)
    relative = f".rag/test-cluster-{secrets.token_hex(4)}.yaml"
    (REPO / relative).parent.mkdir(exist_ok=True)
    (REPO / relative).write_text(yaml.safe_dump(doc))
    yield relative
    (REPO / relative).unlink()


def manifest(name: str, kind: str) -> dict:
    return next(d for d in yaml.safe_load_all((REPO / "k8s" / name).read_text()) if d and d["kind"] == kind)


def swapped(argv: list[str], flag: str, value: str) -> list[str]:
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def scrape(cluster: RayCluster) -> dict[tuple[str, frozenset], float]:
    """Every node's Prometheus endpoint, summed per series (name and labels other than the node's own)."""
    from prometheus_client.parser import text_string_to_metric_families

    per_node = {
        "NodeAddress",
        "SessionName",
        "WorkerId",
        "Version",
        "Component",
        "replica",
        "instance",
        "otel_scope_name",
        "otel_scope_schema_url",
        "otel_scope_version",
    }
    totals: dict[tuple[str, frozenset], float] = {}
    for port in cluster.metrics_ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("ray_rag_"):
                    key = (sample.name, frozenset((k, v) for k, v in sample.labels.items() if k not in per_node))
                    totals[key] = totals.get(key, 0) + sample.value
    return totals


def settled_scrape(cluster: RayCluster) -> dict[tuple[str, frozenset], float]:
    """A scrape once earlier traffic has been exported: two scrapes a report interval apart agree."""
    previous, deadline = scrape(cluster), time.monotonic() + 90
    while True:
        time.sleep(METRICS_REPORT_S + 1)
        current = scrape(cluster)
        if current == previous or time.monotonic() > deadline:
            return current
        previous = current


def value(totals: dict, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in totals.items() if n == name and wanted <= found)


@pytest.fixture(scope="module")
def ingested(cluster, local_config, tmp_path_factory) -> dict:
    """The RayJob's exact entrypoint, through `ray job submit`, with a local config file and corpus."""
    corpus = copy_pages(tmp_path_factory.mktemp("cluster-corpus") / "corpus", PAGES)
    argv = shlex.split(manifest("rayjob-ingest.yaml", "RayJob")["spec"]["entrypoint"])
    argv = swapped(swapped(argv, "--config", local_config), "--corpus", str(corpus))
    job_id = f"rag-ingest-{secrets.token_hex(4)}"
    submitted = cluster.cli(
        "ray", "job", "submit", "--address", cluster.dashboard, "--submission-id", job_id, "--", *argv, timeout=600
    )
    logs = cluster.cli("ray", "job", "logs", job_id, "--address", cluster.dashboard).stdout
    summary = next(line for line in logs.splitlines() if line.startswith("chunks written:"))
    return {
        "job_id": job_id,
        "logs": logs,
        "submit_output": submitted.stdout,
        "chunks": int(summary.split()[2]),
        "documents": len(PAGES),
    }


def test_the_rayjob_entrypoint_writes_the_collection(ingested, local_config):
    assert f"documents read: {len(PAGES)}  written: {len(PAGES)}" in ingested["logs"]
    assert "succeeded" in ingested["submit_output"].lower()
    cfg = RagConfig.load(REPO / local_config)
    store = MilvusChunkStore(cfg.milvus, cfg.embedder.dim)
    assert store.client.has_collection(cfg.milvus.collection)
    assert store.count() == ingested["chunks"] > 0


@pytest.fixture(scope="module")
def deployed(cluster, ingested, local_config, tmp_path_factory) -> dict:
    """The RayService's exact serveConfigV2 through `serve deploy`, its config file swapped for the local one;
    /readyz polled from the moment the deploy is accepted."""
    serve_config = yaml.safe_load(manifest("rayservice.yaml", "RayService")["spec"]["serveConfigV2"])
    serve_config["applications"][0]["args"]["config_file"] = local_config
    path = tmp_path_factory.mktemp("cluster-serve") / "serve.yaml"
    path.write_text(yaml.safe_dump(serve_config))
    cluster.cli("serve", "deploy", str(path), "--address", cluster.dashboard)
    statuses: list[tuple[int, str]] = []
    deadline = time.monotonic() + 420
    while True:
        try:
            response = httpx.get(f"http://127.0.0.1:{SERVE_PORT}/readyz", timeout=30)
            statuses.append((response.status_code, response.text))
            if response.status_code == 200:
                break
        except httpx.HTTPError as e:
            statuses.append((0, repr(e)))
        assert time.monotonic() < deadline, statuses[-5:]
        time.sleep(2)
    yield {"statuses": statuses}
    cluster.cli("serve", "shutdown", "-y", "--address", cluster.dashboard)


def test_readiness_is_503_until_a_chat_can_succeed_then_200(deployed):
    statuses = deployed["statuses"]
    not_ready = [text for status, text in statuses if status == 503 and "not ready" in text]
    assert not_ready, statuses[:10]  # the ingress answered while a part (the engine) could not yet
    assert "engine" in not_ready[0] and json.loads(not_ready[0])["error"]["code"] == "service_unavailable"
    assert statuses[-1][0] == 200 and json.loads(statuses[-1][1])["parts"] == {
        "embedder": "ok",
        "milvus": "ok",
        "engine": "ok",
    }


def test_serve_deploy_answers_a_streamed_chat_with_sources_from_replicas_on_several_nodes(cluster, deployed):
    client = OpenAI(base_url=f"http://127.0.0.1:{SERVE_PORT}/v1", api_key="unused", max_retries=0, timeout=120)
    sources, text = None, ""
    for chunk in client.chat.completions.create(
        model="rag",
        stream=True,
        temperature=0,
        messages=[{"role": "user", "content": "How does role-based access control work?"}],
    ):
        sources = (chunk.model_extra or {}).get("sources") or sources
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text.strip() and sources and any("rbac" in s["url"] for s in sources)

    actors = json.loads(
        cluster.cli(
            "ray",
            "list",
            "actors",
            "--format",
            "json",
            "--limit",
            "1000",
            "--filter",
            "state=ALIVE",
            "--address",
            cluster.dashboard,
        ).stdout
    )
    replicas = [a for a in actors if a["class_name"].startswith("ServeReplica:rag:")]
    deployments = {a["class_name"].split(":")[2] for a in replicas}
    assert {"RagIngress", "QueryEmbedder", "Retriever", "LLMServer"} <= {d.split(":")[0] for d in deployments}
    assert len({a["node_id"] for a in replicas}) > 1, replicas

    status = cluster.cli("serve", "status", "--address", cluster.dashboard).stdout
    assert yaml.safe_load(status)["applications"]["rag"]["status"] == "RUNNING", status


def test_the_rag_metrics_count_the_traffic(cluster, ingested, deployed):
    client = OpenAI(base_url=f"http://127.0.0.1:{SERVE_PORT}/v1", api_key="unused", max_retries=0, timeout=120)
    before = settled_scrape(cluster)
    route = "/v1/chat/completions"
    question = [{"role": "user", "content": "What does the chunk cache do?"}]
    completion_tokens = 0
    for _ in range(2):  # streamed, with the usage event asked for, to know the engine's count
        for chunk in client.chat.completions.create(
            model="rag", messages=question, stream=True, temperature=0, stream_options={"include_usage": True}
        ):
            completion_tokens += chunk.usage.completion_tokens if chunk.usage else 0
    answer = client.chat.completions.create(model="rag", messages=question, temperature=0)
    completion_tokens += answer.usage.completion_tokens
    bad = httpx.post(f"http://127.0.0.1:{SERVE_PORT}{route}", json={"model": "rag", "messages": []}, timeout=30)
    assert bad.status_code == 400 and completion_tokens > 0

    def delta(totals: dict, name: str, **labels: str) -> float:
        return value(totals, name, **labels) - value(before, name, **labels)

    expected = {
        ("ray_rag_requests_total", (("route", route), ("status", "200"))): 3,
        ("ray_rag_requests_total", (("route", route), ("status", "400"))): 1,
        ("ray_rag_errors_total", (("kind", "invalid_request_error"),)): 1,
        ("ray_rag_time_to_first_token_ms_count", ()): 2,
        ("ray_rag_output_tokens_total", ()): completion_tokens,
        ("ray_rag_prompt_tokens_count", ()): 3,
        ("ray_rag_passages_returned_count", ()): 3,
        ("ray_rag_retrieval_latency_ms_count", (("mode", "hybrid"),)): 3,
    }
    deadline = time.monotonic() + 90
    while True:
        totals = scrape(cluster)
        got = {key: delta(totals, key[0], **dict(key[1])) for key in expected}
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(METRICS_REPORT_S)
    assert got == expected
    assert value(totals, "ray_rag_query_embed_batch_size_sum") >= 3  # the chats' queries, the probes' too
    # The ingest job's counters outlive its driver.
    assert value(totals, "ray_rag_ingest_documents_total", outcome="read") == ingested["documents"]
    assert value(totals, "ray_rag_ingest_documents_total", outcome="written") == ingested["documents"]
    assert value(totals, "ray_rag_ingest_chunks_total", op="written") == ingested["chunks"]
    assert value(totals, "ray_rag_ingest_chunks_per_second_count") == 1
    assert value(totals, "ray_rag_ingest_seconds_total") > 0

"""The Grafana dashboard (k8s/grafana/rag-dashboard.json) queries only series that exist: this project's own
(read from the metrics modules' source) and Ray's, as named in the installed Ray's own Grafana panel definitions.
Pure text checks: nothing imports Ray or starts it."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "k8s" / "grafana" / "rag-dashboard.json"
METRIC_SOURCES = (ROOT / "serve_app" / "metrics.py", ROOT / "ingest_jobs" / "metrics.py")

# The families the dashboard is built around (Counter "x" -> ray_x_total, Histogram "x" -> ray_x_bucket/_sum/_count).
EXPECTED_FAMILIES = {
    ("Counter", "rag_requests"),
    ("Counter", "rag_errors"),
    ("Histogram", "rag_retrieval_latency_ms"),
    ("Histogram", "rag_time_to_first_token_ms"),
    ("Counter", "rag_output_tokens"),
    ("Histogram", "rag_prompt_tokens"),
    ("Histogram", "rag_passages_returned"),
    ("Histogram", "rag_query_embed_batch_size"),
    ("Counter", "rag_ingest_documents"),
    ("Counter", "rag_ingest_chunks"),
    ("Counter", "rag_ingest_seconds"),
    ("Histogram", "rag_ingest_chunks_per_second"),
}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# PromQL words that are not metric names (function names are recognised by the "(" that follows them).
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "le",
}

_IDENT = r"[A-Za-z_:][A-Za-z0-9_:]*"


# ----------------------------------------------------------------------------------------------------- helpers
def project_families(sources=METRIC_SOURCES) -> set[tuple[str, str]]:
    """(kind, name) of each ``Counter("name", ...)`` / ``Histogram("name", ...)`` in the metrics modules."""
    families = set()
    for path in sources:
        for kind, name in re.findall(r"\b(Counter|Histogram)\(\s*['\"]([^'\"]+)['\"]", path.read_text()):
            families.add((kind, name))
    return families


def family_series(kind: str, name: str) -> set[str]:
    if kind == "Counter":
        return {f"ray_{name}_total"}
    return {f"ray_{name}{suffix}" for suffix in HISTOGRAM_SUFFIXES}


def project_series(families) -> set[str]:
    return set().union(*(family_series(kind, name) for kind, name in families))


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are neither functions, keywords nor labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # range selectors and subqueries: [5m], [$__rate_interval]
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables outside the above
    names = set()
    for match in re.finditer(rf"(?<![A-Za-z0-9_:.$])({_IDENT})(\s*\()?", text):
        ident, call = match.group(1), match.group(2)
        if call or ident.lower() in PROMQL_KEYWORDS:
            continue
        names.add(ident)
    return names


def panels(dashboard: dict):
    """Every panel, rows' collapsed children included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def exprs(dashboard: dict):
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", ""), target["expr"]


def used_names(dashboard: dict) -> set[str]:
    return set().union(*(metric_names(expr) for _, expr in exprs(dashboard)))


def ray_package_dir() -> Path:
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations, "ray is a dependency of the project"
    return Path(next(iter(spec.submodule_search_locations)))


def ray_panel_text(ray_dir: Path) -> str:
    """Ray's own Grafana panel definitions (Serve, Serve deployment, Serve LLM / vLLM, ...)."""
    files = sorted((ray_dir / "dashboard" / "modules" / "metrics" / "dashboards").glob("*_panels.py"))
    assert any(f.name == "serve_llm_dashboard_panels.py" for f in files), files
    return "\n".join(f.read_text() for f in files)


def ray_serve_declared(ray_dir: Path) -> set[str]:
    """Metric names Ray Serve declares in its source (``metrics.Gauge("serve_...", ...)``), exported as ray_<name>.

    Only for the Serve series Ray's panels leave out (the autoscaler's target/desired replicas)."""
    names = set()
    for path in (ray_dir / "serve" / "_private").glob("*.py"):
        for name in re.findall(
            r"\b(?:Gauge|Counter|Histogram)\(\s*\n?\s*['\"](serve_[A-Za-z0-9_]+)['\"]", path.read_text()
        ):
            names.add(f"ray_{name}")
    return names


def _occurs(name: str, text: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_:]){re.escape(name)}(?![A-Za-z0-9_:])", text) is not None


def unknown_metrics(dashboard: dict, ours: set[str], ray_text: str, serve_declared: set[str]) -> set[str]:
    """Names the dashboard queries that are neither this project's series nor found in Ray."""
    unknown = set()
    for name in used_names(dashboard):
        if name in ours or _occurs(name, ray_text):
            continue
        # Ray's LLM panels pass histogram bases to helpers that append _bucket/_sum/_count.
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base and _occurs(base, ray_text):
            continue
        # Serve declares counters without the _total that Prometheus adds.
        if name in serve_declared or (name.endswith("_total") and name[: -len("_total")] in serve_declared):
            continue
        unknown.add(name)
    return unknown


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def families() -> set[tuple[str, str]]:
    return project_families()


@pytest.fixture(scope="module")
def ray_refs() -> tuple[str, set[str]]:
    ray_dir = ray_package_dir()
    return ray_panel_text(ray_dir), ray_serve_declared(ray_dir)


# ----------------------------------------------------------------------------------------------------- tests
def test_dashboard_shape(dashboard):
    assert dashboard["uid"] == "rag-on-ray"
    assert dashboard["title"] == "RAG on Ray"
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    all_panels = list(panels(dashboard))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = {p["title"] for p in all_panels if p["type"] == "row"}
    assert {"RAG serving", "Serve", "vLLM", "Ingest"} <= rows
    data_panels = [p for p in all_panels if p["type"] != "row"]
    assert len(data_panels) >= 20
    for panel in data_panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["expr"].count("{") == target["expr"].count("}"), target["expr"]


def test_no_hardcoded_application_or_namespace(dashboard):
    for title, expr in exprs(dashboard):
        assert not re.search(r"\b(application|namespace)\s*=~?\s*\"[^\"$]", expr), (title, expr)


def test_metric_name_extraction():
    expr = (
        'histogram_quantile(0.95, sum by (le, mode) (rate(ray_rag_retrieval_latency_ms_bucket{mode=~"a|b"}'
        '[$__rate_interval]))) / on(WorkerId) group_left(deployment) sum(ray_x) + ray_y{a="b"} and ray_z[5m]'
    )
    assert metric_names(expr) == {"ray_rag_retrieval_latency_ms_bucket", "ray_x", "ray_y", "ray_z"}


def test_project_families_match_the_dashboard_design(families):
    """The metrics modules declare exactly the families this dashboard was designed for."""
    assert families == EXPECTED_FAMILIES


def test_every_metric_is_known(dashboard, families, ray_refs):
    ray_text, serve_declared = ray_refs
    assert unknown_metrics(dashboard, project_series(families), ray_text, serve_declared) == set()


def test_every_project_family_is_charted(dashboard, families):
    used = used_names(dashboard)
    missing = {name for kind, name in families if not family_series(kind, name) & used}
    assert not missing, f"families with no panel: {sorted(missing)}"


def test_serve_and_vllm_series_are_charted(dashboard):
    used = used_names(dashboard)
    for name in (
        "ray_serve_deployment_request_counter_total",
        "ray_serve_deployment_processing_latency_ms_bucket",
        "ray_serve_deployment_queued_queries",
        "ray_serve_replica_processing_queries",
        "ray_serve_deployment_replica_healthy",
        "ray_vllm_time_to_first_token_seconds_bucket",
        "ray_vllm_num_requests_running",
        "ray_vllm_num_requests_waiting",
        "ray_vllm_generation_tokens_total",
        "ray_vllm_kv_cache_usage_perc",
        "ray_vllm_prompt_tokens_total",
    ):
        assert name in used, name
    assert not any(":" in name for name in used), "Ray exports vLLM's vllm:* metrics with ':' replaced by '_'"


@pytest.mark.parametrize(
    ("right", "typo"),
    [
        ("ray_rag_requests_total", "ray_rag_request_total"),
        ("ray_serve_deployment_request_counter_total", "ray_serve_deployment_requests_counter_total"),
        ("ray_vllm_num_requests_running", "ray_vllm:num_requests_running"),
        ("ray_vllm_time_to_first_token_seconds_bucket", "ray_vllm_time_to_first_token_second_bucket"),
        ("ray_serve_autoscaling_target_replicas", "ray_serve_autoscaling_target_replica"),
    ],
)
def test_checker_reports_a_typo(dashboard, families, ray_refs, right, typo):
    """Negative control: one mutated expr makes the checker name the misspelt metric."""
    ray_text, serve_declared = ray_refs
    mutated = copy.deepcopy(dashboard)
    target = next(t for p in panels(mutated) for t in p.get("targets", []) if right in t.get("expr", ""))
    target["expr"] = target["expr"].replace(right, typo, 1)
    assert unknown_metrics(mutated, project_series(families), ray_text, serve_declared) == {typo}

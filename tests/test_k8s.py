"""The production manifests, checked offline: each validates against its schema (KubeRay's and the Milvus Operator's
CRDs, closed against unknown fields as the API server prunes them; Kubernetes' own for core kinds; Ray's for
cluster.yaml; Serve's for serveConfigV2), and each agrees with the one config and the CLI it runs."""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import math
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from rag.config import RagConfig
from serve_app.serve_yaml import GENERATED, AppArgs, generated_files, serve_deploy_yaml
from tests.k8s_schemas import SCHEMAS, validate_custom

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
KUBERNETES_VERSION = "1.32.0"
MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
RAY_SCHEMA = Path(__import__("ray").__file__).parent / "autoscaler" / "ray-schema.json"


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def kind(name: str, wanted: str) -> dict:
    return next(d for n in MANIFESTS for d in documents(n) if d["kind"] == wanted)


def problems(doc: dict) -> list[str]:
    """Schema errors of one object: a vendored CRD schema, or Kubernetes' own schema for a core kind."""
    if (doc["apiVersion"], doc["kind"]) in SCHEMAS:
        return validate_custom(doc)
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [e.message]
    return []


def cluster_yaml_problems(doc: dict) -> list[str]:
    schema = json.loads(RAY_SCHEMA.read_text())
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]


# ---- schemas ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MANIFESTS)
def test_every_manifest_validates_against_its_schema(name):
    docs = documents(name)
    assert docs
    for doc in docs:
        assert problems(doc) == [], f"{name}: {doc['kind']}"


def test_the_kustomization_renders_valid_objects():
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # the CRD and core-kind checks above still ran on every file
        pytest.skip("kubectl is not installed")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "Milvus", "RayService", "PodMonitor", "ConfigMap"} <= kinds
    assert all(d["metadata"].get("namespace") == "rag" for d in docs if d["kind"] != "Namespace")
    for doc in docs:
        assert problems(doc) == [], doc["kind"]
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap")
    assert json.loads(dashboard["data"]["rag-dashboard.json"])["panels"]


@pytest.mark.parametrize(
    ("where", "typo", "expected"),
    [
        (("spec",), ("serveConfigV2", "serveConfigv2"), "'serveConfigv2' was unexpected"),
        (
            ("spec", "rayClusterConfig", "workerGroupSpecs", 0),
            ("minReplicas", "minReplica"),
            "'minReplica' was unexpected",
        ),
        (("spec", "rayClusterConfig"), ("enableInTreeAutoscaling", "enableInTreeAutoScaling"), "was unexpected"),
    ],
)
def test_a_typo_in_the_rayservice_fails(where, typo, expected):
    doc = copy.deepcopy(kind("rayservice.yaml", "RayService"))
    node = doc
    for key in where:
        node = node[key]
    old, new = typo
    node[new] = node.pop(old)
    assert any(expected in p for p in problems(doc)), problems(doc)


def test_typos_in_the_other_kinds_fail():
    job = copy.deepcopy(kind("rayjob-ingest.yaml", "RayJob"))
    job["spec"]["shutdownAfterJobFinished"] = job["spec"].pop("shutdownAfterJobFinishes")
    assert any("'shutdownAfterJobFinished' was unexpected" in p for p in problems(job))
    milvus = copy.deepcopy(kind("milvus.yaml", "Milvus"))
    milvus["spec"]["mode"] = "clustr"
    assert any("'clustr' is not one of" in p for p in problems(milvus))
    secret = copy.deepcopy(documents("secrets.example.yaml")[0])
    secret["stringDat"] = secret.pop("stringData")
    assert any("'stringDat' was unexpected" in p for p in problems(secret))


def test_cluster_yaml_validates_against_rays_schema():
    doc = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert cluster_yaml_problems(doc) == []
    doc["available_node_types"]["ray.worker.gpu"]["min_worker"] = doc["available_node_types"]["ray.worker.gpu"].pop(
        "min_workers"
    )
    doc["max_worker"] = doc.pop("max_workers")
    found = cluster_yaml_problems(doc)
    assert any("'min_worker' was unexpected" in p for p in found) and any("'max_worker'" in p for p in found), found


def test_serve_config_v2_is_a_valid_serve_deploy_config():
    from ray.serve.schema import ServeDeploySchema

    serve_yaml = yaml.safe_load(kind("rayservice.yaml", "RayService")["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(serve_yaml)
    assert schema.proxy_location == "EveryNode" and schema.http_options.host == "0.0.0.0"
    args = AppArgs.model_validate(schema.applications[0].args)
    assert RagConfig.load(REPO / args.config_file).llm.accelerator == "gpu"


# ---- parity -----------------------------------------------------------------------------------------------
def test_every_generated_file_is_up_to_date():
    """`rag generate` would change nothing: serveConfigV2 and the Serve YAMLs equal the generator's output."""
    assert {output for _, _, output in GENERATED} >= {"k8s/rayservice.yaml", "configs/serve_gpu.yaml"}
    for output, text in generated_files(REPO).items():
        assert (REPO / output).read_text() == text, f"{output} is stale: run `rag generate`"
    service = kind("rayservice.yaml", "RayService")
    gpu = RagConfig.load(REPO / "configs" / "gpu.yaml")
    assert service["spec"]["serveConfigV2"] == serve_deploy_yaml(gpu, "configs/gpu.yaml", "cluster")


def test_the_generator_notices_a_drifted_manifest(tmp_path):
    for _, _, output in GENERATED:
        (tmp_path / output).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / output, tmp_path / output)
    shutil.copytree(REPO / "configs", tmp_path / "configs", dirs_exist_ok=True)
    gpu = tmp_path / "configs" / "gpu.yaml"
    gpu.write_text(gpu.read_text().replace("\nserve:\n", "\nserve:\n  port: 8001\n", 1))
    drifted = generated_files(tmp_path)
    assert drifted["k8s/rayservice.yaml"] != (REPO / "k8s" / "rayservice.yaml").read_text()
    assert "port: 8001" in yaml.safe_load(drifted["k8s/rayservice.yaml"])["spec"]["serveConfigV2"]


def ingest_parser() -> argparse.ArgumentParser:
    """The ingest job's own argument parser, as `python -m ingest_jobs.ingest` builds it."""
    from ingest_jobs import ingest

    parser = argparse.ArgumentParser(prog="python -m ingest_jobs.ingest", exit_on_error=False)
    parser.add_argument("corpus", nargs="?")
    parser.add_argument("--corpus", dest="corpus_option")
    ingest.add_arguments(parser)
    return parser


def check_ingest_command(command: str) -> argparse.Namespace:
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "ingest_jobs.ingest"], argv
    args = ingest_parser().parse_args(argv[3:])
    assert args.config and (REPO / args.config).is_file(), args.config
    return args


def test_the_rayjob_entrypoint_is_one_the_ingest_job_accepts():
    job = kind("rayjob-ingest.yaml", "RayJob")
    args = check_ingest_command(job["spec"]["entrypoint"])
    assert args.config == "configs/gpu.yaml" and args.corpus_option.startswith("s3://")
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] > 0
    assert "clusterSelector" not in job["spec"] and job["spec"]["rayClusterSpec"]
    with pytest.raises((SystemExit, argparse.ArgumentError)):  # the same check refuses a flag the job lacks
        check_ingest_command(job["spec"]["entrypoint"] + " --colection x")


def test_cluster_yaml_starts_what_kubernetes_starts():
    doc = yaml.safe_load((REPO / "cluster.yaml").read_text())
    head = " ".join(doc["head_start_ray_commands"])
    deploy = re.search(r"serve deploy (\S+)", head)
    assert deploy, head
    serve_file = deploy.group(1)
    assert any(
        output == serve_file and target == "cluster" and config == "configs/gpu.yaml"
        for config, target, output in GENERATED
    ), serve_file
    service_serve = yaml.safe_load(kind("rayservice.yaml", "RayService")["spec"]["serveConfigV2"])
    assert yaml.safe_load((REPO / serve_file).read_text()) == service_serve
    assert "--num-cpus=0" in head or doc["available_node_types"][doc["head_node_type"]]["resources"] == {"CPU": 0}
    assert all("--metrics-export-port=8080" in c for c in (head, " ".join(doc["worker_start_ray_commands"])))
    assert any("pip install" in c and "/home/ray/rag" in c for c in doc["setup_commands"])


def all_images() -> set[str]:
    found = {yaml.safe_load((REPO / "cluster.yaml").read_text())["docker"]["image"]}

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("image"), str):
                found.add(node["image"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for name in MANIFESTS:
        for doc in documents(name):
            if doc["kind"] != "Milvus":  # the operator's own images
                walk(doc)
    return found


def test_images_ray_version_and_pins_agree():
    import ray

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ray_pin = next(d for d in project["dependencies"] if d.startswith("ray["))
    assert ray_pin.endswith(f"=={ray.__version__}"), ray_pin
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={ray.__version__}" in dockerfile
    assert re.search(r"^FROM rayproject/ray-llm:\$\{RAY_VERSION\}-py311-cu\d+$", dockerfile, re.M)
    images = all_images()
    assert images == {f"ghcr.io/your-org/ray-rag:{project['version']}"}, images
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "ghcr.io/your-org/ray-rag", "newTag": project["version"]}]
    for name, wanted in (("rayservice.yaml", "RayService"), ("rayjob-ingest.yaml", "RayJob")):
        spec = kind(name, wanted)["spec"]
        cluster = spec.get("rayClusterConfig") or spec["rayClusterSpec"]
        assert cluster["rayVersion"] == ray.__version__, name
    # The gpu extra's vLLM is the one Ray's own `llm` extra pins.
    ray_llm_vllm = next(r for r in importlib.metadata.requires("ray") if r.startswith("vllm") and 'extra == "llm"' in r)
    pinned = re.search(r"==([\w.]+)", ray_llm_vllm).group(1)
    assert project["optional-dependencies"]["gpu"] == [f"vllm=={pinned}"]


def test_milvus_names_and_buckets_agree_with_the_gpu_config():
    gpu = RagConfig.load(REPO / "configs" / "gpu.yaml")
    milvus = kind("milvus.yaml", "Milvus")
    host = urlparse(gpu.milvus.uri).hostname
    assert host == f"{milvus['metadata']['name']}-milvus.{milvus['metadata']['namespace']}.svc.cluster.local"
    assert milvus["spec"]["mode"] == "cluster"
    # Bulk import reads staged files from the bucket Milvus itself stores its data in.
    assert urlparse(gpu.milvus.bulk_stage_uri).netloc == milvus["spec"]["config"]["minio"]["bucketName"]
    secret_names = {d["metadata"]["name"] for d in documents("secrets.example.yaml")}
    assert milvus["spec"]["dependencies"]["storage"]["secretRef"] in secret_names
    assert {"rag-hf-token", "rag-ray-auth", "rag-api-keys", "rag-s3"} <= secret_names
    for doc in documents("secrets.example.yaml"):  # placeholders only
        assert all(re.fullmatch(r"<[^>]+>\n?|(<[^>]+>\n)+", v) for v in doc["stringData"].values()), doc


def test_every_ray_pod_exports_metrics_the_podmonitor_scrapes():
    monitor = kind("podmonitor.yaml", "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}  # KubeRay's label on its pods
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    for name, wanted in (("rayservice.yaml", "RayService"), ("rayjob-ingest.yaml", "RayJob")):
        spec = kind(name, wanted)["spec"]
        cluster = spec.get("rayClusterConfig") or spec["rayClusterSpec"]
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            assert group["rayStartParams"]["metrics-export-port"] == "8080", name
            container = group["template"]["spec"]["containers"][0]
            assert {"name": port, "containerPort": 8080} in container["ports"], name


def test_the_cluster_runs_serve_as_the_tests_and_benchmarks_do():
    from serve_app.serve_yaml import SERVE_ENV

    spec = kind("rayservice.yaml", "RayService")["spec"]["rayClusterConfig"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
        assert SERVE_ENV.items() <= env.items()
    options = yaml.safe_load((REPO / "cluster.yaml").read_text())["docker"]["run_options"]
    assert all(f"--env {name}={value}" in options for name, value in SERVE_ENV.items())


def test_the_rayservice_serves_on_kubernetes():
    spec = kind("rayservice.yaml", "RayService")["spec"]
    cluster = spec["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True and cluster["autoscalerOptions"]
    head_ports = {p["containerPort"] for p in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {8000, 8265, 8080} <= head_ports
    gpu_group = next(g for g in cluster["workerGroupSpecs"] if "nvidia.com/gpu" in str(g))
    container = gpu_group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_group["template"]["spec"]["tolerations"] or gpu_group["template"]["spec"]["nodeSelector"]
    keys_file = Path(RagConfig.load(REPO / "configs" / "gpu.yaml").serve.api_keys_file)
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:  # the endpoint's keys where any ingress replica may run, as the config names them
        secret_volumes = {v["name"] for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "rag-api-keys"}
        mounts = pod["containers"][0]["volumeMounts"]
        assert any(m["name"] in secret_volumes and Path(m["mountPath"]) == keys_file.parent for m in mounts)
    secret = next(d for d in documents("secrets.example.yaml") if d["metadata"]["name"] == "rag-api-keys")
    assert keys_file.name in secret["stringData"]
    for group in cluster["workerGroupSpecs"]:  # readiness is the app's, end to end, with a key; liveness KubeRay's
        probe = group["template"]["spec"]["containers"][0]["readinessProbe"]
        assert probe["exec"]["command"] == ["rag", "ready", "--config", "configs/gpu.yaml", "--timeout", "0"]


# ---- the GPU configuration, built offline -----------------------------------------------------------------
def cpus(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def deployments_of(app) -> list:
    from ray.serve.deployment import Application

    bound = app._bound_deployment
    found = [bound]
    for arg in [*bound.init_args, *bound.init_kwargs.values()]:
        if isinstance(arg, Application):
            found += deployments_of(arg)
    return found


def replica_demand(deployment) -> tuple[int, dict[str, float]]:
    """A deployment's most replicas and what one replica reserves (its placement group's bundles when it has one)."""
    config = deployment._deployment_config
    most = config.autoscaling_config.max_replicas if config.autoscaling_config else config.num_replicas
    bundles = deployment._replica_config.placement_group_bundles
    if bundles:
        need: dict[str, float] = {}
        for bundle in bundles:
            for resource, amount in bundle.items():
                if resource.startswith("accelerator_type:"):  # Ray detects it on the node (checked separately)
                    continue
                need[resource] = need.get(resource, 0) + amount
    else:
        options = deployment.ray_actor_options
        need = {"CPU": options.get("num_cpus", 1), "GPU": options.get("num_gpus", 0)}
    return most, need


@pytest.mark.integration
@pytest.mark.parametrize("name", ["local.yaml", "gpu.yaml"])
def test_every_config_builds_its_serve_app_offline(name, ray_cluster):
    """No engine starts and nothing connects: ray.serve.llm's own LLMConfig validates the engine settings, and
    every deployment's options resolve (Ray's LLM builder needs a Ray context, hence the cluster)."""
    from ray.serve.llm import LLMConfig

    from serve_app.app import build_rag_app
    from serve_app.llm import llm_config_kwargs

    cfg = RagConfig.load(REPO / "configs" / name)
    llm = LLMConfig(**llm_config_kwargs(cfg, cfg.llm.model_source))
    if cfg.llm.accelerator == "gpu":
        assert llm.accelerator_type == cfg.llm.accelerator_type
        assert llm.engine_kwargs["tensor_parallel_size"] == 1
        assert llm.deployment_config["autoscaling_config"]["max_replicas"] == cfg.llm.replicas.max_replicas
    deployments = {d.name: d for d in deployments_of(build_rag_app(cfg))}
    assert set(deployments) == {"RagIngress", "QueryEmbedder", "Retriever", f"LLMServer:{cfg.llm.model_id}"}
    for role, deployment_name in (("ingress", "RagIngress"), ("embedder", "QueryEmbedder"), ("retriever", "Retriever")):
        settings = getattr(cfg.serve, role)
        deployment = deployments[deployment_name]
        assert deployment.max_ongoing_requests == settings.max_ongoing_requests
        assert deployment.max_queued_requests == settings.max_queued_requests
        assert deployment._deployment_config.backpressure_config.retry_after_s == cfg.serve.retry_after_s
        assert replica_demand(deployment) == (
            settings.max_replicas,
            {"CPU": settings.num_cpus, "GPU": settings.num_gpus},
        )
    engine = deployments[f"LLMServer:{cfg.llm.model_id}"]
    assert engine.max_ongoing_requests == cfg.llm.replicas.max_ongoing_requests
    assert engine.max_queued_requests == cfg.llm.replicas.max_queued_requests
    assert engine._deployment_config.backpressure_config.retry_after_s == cfg.serve.retry_after_s


@pytest.mark.integration
def test_the_rayservice_worker_groups_hold_what_the_deployments_ask_for(ray_cluster):
    """At every deployment's most replicas, the worker groups at their most pods have the CPUs and GPUs, and every
    replica fits in one pod of some group."""
    from serve_app.app import build_rag_app

    cfg = RagConfig.load(REPO / "configs" / "gpu.yaml")
    groups = kind("rayservice.yaml", "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    pods = []
    for group in groups:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        pods.append((group["maxReplicas"], {"CPU": cpus(limits["cpu"]), "GPU": float(limits.get("nvidia.com/gpu", 0))}))
    capacity = {r: sum(n * pod[r] for n, pod in pods) for r in ("CPU", "GPU")}
    demand = {"CPU": 0.0, "GPU": 0.0}
    for deployment in deployments_of(build_rag_app(cfg)):
        most, need = replica_demand(deployment)
        assert any(all(pod.get(r, 0) >= amount for r, amount in need.items()) for _, pod in pods), deployment.name
        # Serve spreads replicas over nodes, so a replica on a fraction of a GPU may keep a whole one from vLLM.
        demand["CPU"] += most * need.get("CPU", 0)
        demand["GPU"] += most * math.ceil(need.get("GPU", 0))
    assert demand["GPU"] > 0 and all(demand[r] <= capacity[r] for r in demand), (demand, capacity)
    gpu_group = next(g for g in groups if "nvidia.com/gpu" in str(g))  # the GPU type Ray detects is the one asked for
    assert (
        gpu_group["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == f"NVIDIA-{cfg.llm.accelerator_type}"
    )

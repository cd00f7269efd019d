"""The ``rag`` command: ``rag ingest PATH``, ``rag demo``, ``rag milvus start|stop|status``, ``rag config``,
``rag serve-config``, ``rag generate``, ``rag ready``.

The top layer: it may import every path, and imports each only in the subcommand that needs it, so that
`rag config` does not start vLLM's imports.
"""

from __future__ import annotations

import argparse
import sys

from rag.api_keys import read_api_keys
from rag.config import SERVE_TARGETS, ConfigError, RagConfig, parse_overrides
from rag.milvus_server import answers, start_local, stop_local
from rag.store import MilvusUnavailable

EXIT_USAGE = 2


def _milvus(args: argparse.Namespace) -> int:
    cfg = RagConfig.load(args.config, parse_overrides(args.set)).milvus
    if args.action == "start":
        if answers(cfg.uri):
            print(f"Milvus already answers at {cfg.uri}")
            return 0
        pid = start_local(cfg)
        print(f"milvus-lite server pid {pid} at {cfg.uri}, data in {cfg.local_data_dir}")
    elif args.action == "stop":
        print("stopped" if stop_local(cfg) else "no local milvus-lite server was running")
    else:
        up = answers(cfg.uri)
        print(f"Milvus at {cfg.uri}: {'up' if up else 'down'}")
        return 0 if up else 1
    return 0


def _config(args: argparse.Namespace) -> int:
    cfg = RagConfig.load(args.config, parse_overrides(args.set))
    if args.command == "serve-config":
        if args.set or not args.config:
            raise ConfigError("serve-config takes --config FILE only: the Serve YAML points at that file")
        from serve_app.serve_yaml import open_endpoint_warning, serve_deploy_yaml, serve_host

        print(serve_deploy_yaml(cfg, args.config, args.target), end="")
        if warning := open_endpoint_warning(cfg, serve_host(cfg, args.target)):
            print(warning, file=sys.stderr)
    else:
        print(cfg.to_yaml(), end="")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serve_app.serve_yaml import GENERATED, generated_files, open_endpoint_warning, serve_host

    root = Path(args.root)
    for config_file, target, _ in GENERATED:
        cfg = RagConfig.load(root / config_file)
        if warning := open_endpoint_warning(cfg, serve_host(cfg, target)):
            print(f"{config_file}: {warning}", file=sys.stderr)
    for output, text in generated_files(root).items():
        path = root / output
        changed = not path.is_file() or path.read_text() != text
        if changed:
            path.write_text(text)
        print(f"{'wrote' if changed else 'unchanged'} {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ingest"]:
        from ingest_jobs.ingest import main as ingest_main

        return ingest_main(argv[1:], prog="rag ingest")
    if argv[:1] == ["eval"]:
        from evaluation.cli import main as eval_main

        return eval_main(argv[1:])
    if argv[:1] == ["demo"]:
        from entrypoints.demo import run_demo

        return run_demo(argv[1:])
    parser = argparse.ArgumentParser(prog="rag", description="RAG on Ray: ingest into Milvus, serve answers.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ingest", help="ingest a corpus folder or URI (rag ingest --help)")
    milvus = sub.add_parser("milvus", help="manage the local milvus-lite server")
    milvus.add_argument("action", choices=["start", "stop", "status"])
    sub.add_parser("demo", help="ingest, serve, ask one question (rag demo --help)")
    sub.add_parser("eval", help="retrieval metrics of a collection on a question set (rag eval --help)")
    config = sub.add_parser("config", help="print the resolved config as YAML")
    serve_config = sub.add_parser("serve-config", help="print the Serve YAML (serve run / serve deploy) for a config")
    serve_config.add_argument(
        "--target",
        choices=SERVE_TARGETS,
        default="local",
        help="local: one proxy on serve.host; cluster (KubeRay, ray up): every node, 0.0.0.0",
    )
    ready = sub.add_parser("ready", help="wait until the endpoint's /readyz answers 200")
    ready.add_argument("--url", default="http://127.0.0.1:8000", help="the Serve endpoint (default: the local one)")
    ready.add_argument("--timeout", type=float, default=600, help="seconds to wait (default: 600)")
    generate = sub.add_parser("generate", help="rewrite every generated file (Serve YAMLs, RayService serveConfigV2)")
    generate.add_argument("--root", default=".", help="the project folder (default: here)")
    for p in (milvus, config, serve_config, ready):
        p.add_argument("--config", help="YAML config file")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "ready":  # with the config's first API key, if it has any
            from entrypoints.ready import wait_ready

            keys = read_api_keys(RagConfig.load(args.config, parse_overrides(args.set)).serve.api_keys_file)
            return 0 if wait_ready(args.url, args.timeout, api_key=next(iter(keys), None)) else 1
        return _milvus(args) if args.command == "milvus" else _config(args)
    except (ConfigError, MilvusUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

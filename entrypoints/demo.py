"""``rag demo``: ingest a corpus, start the Serve app, ask one question with the official ``openai`` client
and print the streamed answer and its sources. It imports both paths, so it lives beside the CLI."""

from __future__ import annotations

import argparse
import logging
import sys
import time

DEFAULT_QUESTION = "How does the ingest job avoid duplicate chunks when it runs again?"


def run_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rag demo", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="docs", help="folder or URI to ingest (default: the project's docs/)")
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--search", choices=["dense", "bm25", "hybrid"], default=None)
    parser.add_argument("--keep-serving", action="store_true", help="leave the app running after the answer")
    args = parser.parse_args(argv)

    from openai import OpenAI
    from ray import serve

    from ingest_jobs.ingest import run_ingest
    from entrypoints.cli import wait_ready
    from rag.config import ConfigError, RagConfig
    from rag.milvus_server import ensure_milvus
    from rag.store import MilvusUnavailable
    from serve_app.app import prepare_app
    from entrypoints.local_ray import init_local_ray
    from serve_app.serve_config import APP_NAME

    try:
        cfg = RagConfig.load(args.config, {"corpus": {"path": args.corpus}})
        ensure_milvus(cfg.milvus)
    except (ConfigError, MilvusUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    init_local_ray()
    print(run_ingest(cfg).format(), flush=True)

    started = time.perf_counter()
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(prepare_app(cfg), name=APP_NAME, route_prefix="/")
    if not wait_ready(f"http://{cfg.serve.host}:{cfg.serve.port}", 600, quiet=True):
        serve.shutdown()
        return 1
    base_url = f"http://{cfg.serve.host}:{cfg.serve.port}/v1"
    print(f"\nServe app ready at {base_url} in {time.perf_counter() - started:.0f}s\n\nQ: {args.question}\nA: ", end="")

    for http_logger in ("httpx", "httpx2"):  # the openai client's; Ray's driver logging would print each request
        logging.getLogger(http_logger).setLevel(logging.WARNING)
    client = OpenAI(base_url=base_url, api_key="not-needed-locally")
    sources = []
    extra = {"search": args.search} if args.search else None
    stream = client.chat.completions.create(
        model=cfg.llm.model_id, messages=[{"role": "user", "content": args.question}], stream=True, temperature=0,
        extra_body=extra,
    )
    for chunk in stream:
        sources = (chunk.model_extra or {}).get("sources") or sources
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print("\n\nSources:")
    for s in sources:
        print(f"  [{s['index']}] {s['title']} > {s['heading']}  {s['url']}  (score {s['score']:.3f})")
    if args.keep_serving:
        print(f"\nServing at {base_url}; Ctrl-C to stop.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    serve.shutdown()
    return 0

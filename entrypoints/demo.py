"""``rag demo``: ingest a corpus, start the Serve app, ask one question with the official ``openai`` client
and print the streamed answer and its sources. It imports both paths, so it lives beside the CLI."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.prepare import Prepared

DEFAULT_QUESTION = "How does the ingest job avoid duplicate chunks when it runs again?"
DEMO_COLLECTION = "rag_demo"  # not the default rag_chunks, so the demo's chunks never mix with the user's


@contextmanager
def logs_to(path: Path) -> Iterator[IO[str]]:
    """Everything the process and its children write (Ray, vLLM, transformers, C libraries) goes to ``path``;
    what the demo itself says goes to the console it yields."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    console = os.fdopen(os.dup(1), "w", buffering=1)
    saved_err = os.dup(2)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield console
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(console.fileno(), 1)
            os.dup2(saved_err, 2)
            os.close(saved_err)
            console.close()


def run_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rag demo", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="docs", help="folder or URI to ingest (default: the project's docs/)")
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--collection", default=DEMO_COLLECTION, help=f"Milvus collection (default {DEMO_COLLECTION})")
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--search", choices=["dense", "bm25", "hybrid"], default=None)
    parser.add_argument("--keep-serving", action="store_true", help="leave the app running after the answer")
    parser.add_argument("--log", default=".rag/demo.log", help="where Ray's, vLLM's and the models' logs go")
    args = parser.parse_args(argv)

    from rag.config import ConfigError, RagConfig
    from rag.corpus import CorpusNotFound
    from rag.prepare import prepare
    from rag.store import MilvusUnavailable

    try:
        cfg = RagConfig.load(args.config, {"corpus": {"path": args.corpus}, "milvus": {"collection": args.collection}})
        prepared = prepare(cfg, corpus=True)  # a missing folder stops the demo here, before Milvus or Ray start
    except (ConfigError, CorpusNotFound, MilvusUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"demo: logs in {args.log}")
    with logs_to(Path(args.log)) as console:
        try:
            return _demo(prepared, args, console)
        finally:
            if prepared.started_milvus:  # the app has stopped by now, --keep-serving or not
                from rag.milvus_server import stop_local

                stop_local(cfg.milvus)
                print(f"demo: stopped the milvus-lite server it started at {cfg.milvus.uri}", file=console)
            else:
                print(
                    f"demo: the milvus-lite server at {cfg.milvus.uri} keeps running (`rag milvus stop`)", file=console
                )


def _demo(prepared: Prepared, args: argparse.Namespace, console: IO[str]) -> int:
    import ray
    from openai import OpenAI
    from ray import serve

    from entrypoints.local_ray import init_local_ray
    from entrypoints.ready import wait_ready
    from ingest_jobs.ingest import run_ingest
    from rag.api_keys import read_api_keys
    from rag.store import CollectionOutdated, EmbedderMismatch, MilvusChunkStore
    from serve_app.app import prepare_app
    from serve_app.serve_yaml import APP_NAME, open_endpoint_warning

    cfg = prepared.cfg

    def say(*parts: str, end: str = "\n") -> None:
        print(*parts, end=end, file=console, flush=True)

    say(f"demo: ingesting {args.corpus} into collection {cfg.milvus.collection} ...")
    init_local_ray(log_to_driver=False)
    try:
        summary = run_ingest(prepared)
    except (EmbedderMismatch, CollectionOutdated) as e:
        if cfg.milvus.collection != DEMO_COLLECTION:  # a user's collection is never re-embedded unasked
            say(f"error: {e}")
            ray.shutdown()
            return 2
        say(f"demo: {e}; ingesting the demo's own collection afresh")
        MilvusChunkStore(cfg.milvus, cfg.embedder.dim).drop()
        summary = run_ingest(prepared)
    say(summary.format())

    say("demo: starting the Serve app (embedder, retriever, vLLM on CPU with SmolLM2) ...")
    started = time.perf_counter()
    if warning := open_endpoint_warning(cfg, cfg.serve.host):
        say(warning)
    api_key = next(iter(read_api_keys(cfg.serve.api_keys_file)), None)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(prepare_app(cfg), name=APP_NAME, route_prefix="/")
    if not wait_ready(f"http://{cfg.serve.host}:{cfg.serve.port}", 600, api_key=api_key, progress=None):
        say(f"demo: the app did not become ready; see {args.log}")
        serve.shutdown()
        return 1
    base_url = f"http://{cfg.serve.host}:{cfg.serve.port}/v1"
    page = f"http://{cfg.serve.host}:{cfg.serve.port}/"
    say(f"demo: ready in {time.perf_counter() - started:.0f} s: the API at {base_url}, the chat page at {page}")
    say(f"\nQ: {args.question}\nA: ", end="")

    client = OpenAI(base_url=base_url, api_key=api_key or "not-needed-locally")
    sources: list[dict[str, Any]] = []
    extra = {"search": args.search} if args.search else None
    stream = client.chat.completions.create(
        model=cfg.llm.model_id,
        messages=[{"role": "user", "content": args.question}],
        stream=True,  # no temperature: llm.default_sampling gives the model's best answer
        extra_body=extra,
    )
    for chunk in stream:
        sources = (chunk.model_extra or {}).get("sources") or sources
        if chunk.choices and chunk.choices[0].delta.content:
            say(chunk.choices[0].delta.content, end="")
    say("\n\nSources:")
    if not sources:
        say("  (none: no passage was retrieved for this question)")
    for s in sources:
        say(f"  [{s['index']}] {s['title']} > {s['heading']}  {s['url']}  (score {s['score']:.3f})")
    if args.keep_serving:
        say(f"\ndemo: serving the chat page at {page} and the API at {base_url}; Ctrl-C stops them.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    else:
        say("\ndemo: `make chat` (rag demo --keep-serving) leaves the chat page open.")
    serve.shutdown()
    ray.shutdown()
    say("demo: stopped the Serve app and its local Ray cluster")
    return 0

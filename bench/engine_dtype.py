"""The CPU engine's speed per ``llm.dtype``: SmolLM2 on vLLM CPU with the embedded default's engine settings.

    python bench/engine_dtype.py [--dtypes float32 bfloat16] [--prompts 4]

Each dtype runs in its own process (one vLLM engine each). Prompts are RAG-sized: the app's instructions and five
real chunks of the Milvus docs, different for each prompt, prefix caching off. It prints prefill seconds per
prompt (one output token) and decode tokens/s (128 tokens after a short prompt), and the CPU's bf16 support,
which ``llm.dtype: auto`` goes by.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(dtype: str, prompts: int, corpus: str) -> dict[str, float]:
    from vllm import LLM, SamplingParams

    from bench.ingest import chunk_texts
    from rag.config import RagConfig
    from serve_app.llm import llm_config_kwargs, prepare_model_source
    from serve_app.prompt import INSTRUCTIONS

    cfg = RagConfig.load(REPO / "configs" / "local.yaml", {"corpus": {"path": corpus}, "llm": {"dtype": dtype}})
    engine_kwargs = llm_config_kwargs(cfg, "")["engine_kwargs"]
    engine_kwargs.pop("override_generation_config", None)
    llm = LLM(prepare_model_source(cfg.llm), enable_prefix_caching=False, **engine_kwargs)
    texts = chunk_texts(cfg)
    step = len(texts) // (5 * prompts + 5)
    passages = [texts[step * 5 * i : step * 5 * (i + 1) : step] for i in range(prompts + 1)]
    conversations = [
        [
            {"role": "system", "content": "\n\n".join([INSTRUCTIONS, *five])},
            {"role": "user", "content": "How do I make search faster?"},
        ]
        for five in passages
    ]
    one_token = SamplingParams(max_tokens=1, temperature=0)
    llm.chat(conversations[0], one_token, use_tqdm=False)  # warm-up
    started = time.perf_counter()
    outputs = llm.chat(conversations[1:], one_token, use_tqdm=False)  # batched as the engine schedules them
    prefill_s = time.perf_counter() - started
    prompt_tokens = sum(len(o.prompt_token_ids) for o in outputs)
    started = time.perf_counter()
    llm.generate(["Hello"], SamplingParams(max_tokens=128, temperature=0, ignore_eos=True), use_tqdm=False)
    decode_s = time.perf_counter() - started
    return {
        "prefill_s_per_prompt": prefill_s / prompts,
        "prompt_tokens_per_prompt": prompt_tokens / prompts,
        "prefill_tokens_per_s": prompt_tokens / prefill_s,
        "decode_tokens_per_s": 128 / decode_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus" / "milvus-docs"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one dtype, JSON out
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args.prompts, args.corpus)), flush=True)
        return

    from serve_app.llm import cpu_has_bf16

    native = cpu_has_bf16()
    print(f"CPU with native bf16: {native} (llm.dtype auto picks {'bfloat16' if native else 'float32'})")
    for dtype in args.dtypes:
        child = subprocess.run(
            [sys.executable, __file__, "--one", dtype, "--prompts", str(args.prompts), "--corpus", args.corpus],
            capture_output=True,
            text=True,
        )
        line = next((x for x in child.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{dtype}: failed\n{child.stderr[-3000:]}")
            continue
        r = json.loads(line.removeprefix("RESULT "))
        print(
            f"{dtype:>9}: prefill {r['prefill_s_per_prompt']:.1f} s per prompt of {r['prompt_tokens_per_prompt']:.0f} "
            f"tokens ({r['prefill_tokens_per_s']:.0f} tokens/s); decode {r['decode_tokens_per_s']:.1f} tokens/s",
            flush=True,
        )


if __name__ == "__main__":
    main()

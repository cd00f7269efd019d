"""The CPU-host tuning: the engine's token stream batching (``throttled``) with plain async generators, the
switch, and the private LLMServer methods the tuned server overrides."""

import asyncio
import time

import pytest

from rag.config import ConfigError, RagConfig
from serve_app.cpu_host import CpuHostLLMServer, throttled


async def tokens(delays: list[float], error: str | None = None):
    for i, delay in enumerate(delays):
        await asyncio.sleep(delay)
        yield i
    if error:
        raise RuntimeError(error)


async def collect(stream, interval_s: float) -> list[tuple[float, list[int]]]:
    started, out = time.monotonic(), []
    async for batch in throttled(stream, interval_s):
        out.append((time.monotonic() - started, batch))
    return out


def test_first_token_goes_at_once_then_at_most_one_list_per_interval():
    out = asyncio.run(collect(tokens([0.0] + [0.02] * 10), 0.1))
    assert [i for _, batch in out for i in batch] == list(range(11))  # every token, in order
    assert out[0] == (pytest.approx(0.0, abs=0.05), [0])
    gaps = [b[0] - a[0] for a, b in zip(out, out[1:])]
    assert all(gap >= 0.09 for gap in gaps), gaps
    assert 3 <= len(out) <= 5  # 11 tokens over ~0.2 s in about three ticks, not 11 messages


def test_a_token_after_a_quiet_interval_is_not_held_and_back_to_back_tokens_go_together():
    out = asyncio.run(collect(tokens([0.0, 0.0, 0.3]), 0.1))
    assert [batch for _, batch in out] == [[0, 1], [2]]
    assert out[1][0] == pytest.approx(0.3, abs=0.05)


def test_the_streams_error_reaches_the_consumer_after_its_tokens():
    seen = []

    async def run():
        async for batch in throttled(tokens([0.0, 0.01], error="engine died"), 0.05):
            seen.extend(batch)

    with pytest.raises(RuntimeError, match="engine died"):
        asyncio.run(run())
    assert seen == [0, 1]


def test_the_llm_server_methods_the_tuning_overrides_still_exist():
    """Ray 2.60 has no public hook for the stream batcher; an upgrade that renames these must fail here, loudly,
    rather than leave the override silently unused."""
    import inspect

    from ray.serve.llm import LLMServer

    for name in ("_batch_output_stream", "_get_batch_interval_ms"):
        assert callable(getattr(LLMServer, name, None)), (
            f"ray.serve.llm.LLMServer.{name} is gone: see serve_app/cpu_host.py"
        )
    assert list(inspect.signature(LLMServer._batch_output_stream).parameters) == ["self", "generator"]
    assert CpuHostLLMServer._batch_output_stream is not LLMServer._batch_output_stream


def test_the_tuning_is_for_the_cpu_engine_only():
    assert RagConfig.load(None).llm.cpu_host_tuning is True  # unset: on for the CPU engine
    assert RagConfig.load(None, {"llm": {"accelerator": "gpu", "num_gpus": 1}}).llm.cpu_host_tuning is False
    with pytest.raises(ConfigError, match="cpu_host_tuning is for the CPU engine"):
        RagConfig.load(None, {"llm": {"accelerator": "gpu", "num_gpus": 1, "cpu_host_tuning": True}})

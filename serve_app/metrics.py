"""RAG metrics for throughput tuning, through ``ray.serve.metrics``: Serve adds the deployment, replica and
application tags, and every node's metrics port exports them with a ``ray_`` prefix beside Serve's and vLLM's
own series. Outside a Serve replica (tests without Ray) recording is a no-op."""

from __future__ import annotations

from ray.serve.metrics import Counter, Histogram

LATENCY_MS_BOUNDARIES: list[float] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
TOKEN_BOUNDARIES: list[float] = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 131072]
COUNT_BOUNDARIES: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class ServingMetrics:
    """What the ingress sees of each request; the query embedder records its batch sizes."""

    def __init__(self) -> None:
        self.requests = Counter(
            "rag_requests",
            description="HTTP requests by route and status.",
            tag_keys=("route", "status"),  # type: ignore[arg-type]  # Ray annotates a 1-tuple, takes any
        )
        self.errors = Counter(
            "rag_errors", description="Error responses and error events by OpenAI error type.", tag_keys=("kind",)
        )
        self.retrieval_ms = Histogram(
            "rag_retrieval_latency_ms",
            description="Query embedding plus search, by search mode.",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=("mode",),
        )
        self.prompt_tokens = Histogram(
            "rag_prompt_tokens", description="Tokens of each prompt sent to the engine.", boundaries=TOKEN_BOUNDARIES
        )
        self.passages = Histogram(
            "rag_passages_returned",
            description="Passages in each answer's prompt and sources.",
            boundaries=COUNT_BOUNDARIES,
        )
        self.ttft_ms = Histogram(
            "rag_time_to_first_token_ms",
            description="Streamed chats: from arrival at the ingress to the engine's first tokens reaching it.",
            boundaries=LATENCY_MS_BOUNDARIES,
        )
        self.output_tokens = Counter("rag_output_tokens", description="Answer tokens the engine generated for chats.")

    def request(self, route: str, status: int) -> None:
        self.requests.inc(tags={"route": route, "status": str(status)})

    def error(self, kind: str) -> None:
        self.errors.inc(tags={"kind": kind})

    def retrieval(self, mode: str, seconds: float) -> None:
        self.retrieval_ms.observe(seconds * 1000, tags={"mode": mode})

    def passages_returned(self, n: int) -> None:
        self.passages.observe(n)

    def first_token(self, seconds: float) -> None:
        self.ttft_ms.observe(seconds * 1000)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        """The engine's own count of a chat's tokens."""
        self.prompt_tokens.observe(prompt_tokens)
        if completion_tokens:
            self.output_tokens.inc(completion_tokens)


class EmbedderMetrics:
    def __init__(self) -> None:
        self.batch_size = Histogram(
            "rag_query_embed_batch_size",
            description="Queries per embedder forward pass (Serve's dynamic batching).",
            boundaries=COUNT_BOUNDARIES,
        )

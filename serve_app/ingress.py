"""ingress: embed → retrieve → prompt → generate behind an OpenAI-compatible FastAPI app.

``RagService`` holds the logic and takes its parts as async callables, so tests run it with plain
objects and the Serve shell runs it with deployment handles.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from rag.config import RagConfig
from serve_app.errors import (
    APIError,
    bad_request,
    from_engine_error,
    from_stream_failure,
    install_error_handlers,
    remote_cause,
    unavailable,
    validated,
)
from serve_app.metrics import ServingMetrics
from serve_app.prompt import PromptBuilder
from serve_app.protocol import (
    ChatCompletionRequest,
    EmbeddingsRequest,
    EngineErrorResponse,
    RetrievalFilter,
    RetrievalOptions,
    RetrieveRequest,
    SearchMode,
    Source,
    StreamOptions,
)

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]
RetrieveFn = Callable[[str, list[float] | None, SearchMode, int, RetrievalFilter | None], Awaitable[list[Source]]]
GenerateFn = Callable[[ChatCompletionRequest], AsyncIterator[Any]]
EXTRA_FIELDS = tuple(RetrievalOptions.model_fields)
CONVERSATION_ROLES = ("user", "assistant")
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit per request
CHAT_SOURCE_FIELDS = {"index", "id", "url", "title", "heading", "source", "doc_type", "score"}
READY_QUESTION = "ready?"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away, as the request counter records it


def _text_of(content: Any) -> str:
    """A message's text, whether plain or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _is_engine_error(item: Any) -> bool:
    # Ray's ErrorResponse objects are its internal classes; both they and the public ones subclass vLLM's.
    return isinstance(item, EngineErrorResponse)


class RagService:
    """The RAG request logic: validate, retrieve, fit the prompt, stream the engine's answer with sources."""

    def __init__(
        self,
        cfg: RagConfig,
        *,
        embed: EmbedFn,
        retrieve: RetrieveFn,
        generate: GenerateFn,
        prompt: PromptBuilder,
        metrics: ServingMetrics | None = None,
    ):
        self.cfg = cfg
        self.embed = embed
        self.retrieve_fn = retrieve
        self.generate = generate
        self.prompt = prompt
        self.metrics = metrics or ServingMetrics()

    # ---- validation -------------------------------------------------------------------------------------
    def _check_model(self, model: Any) -> None:
        if model is not None and model != self.cfg.llm.model_id:
            raise APIError(
                404,
                f"The model `{model}` does not exist; this server serves `{self.cfg.llm.model_id}`.",
                type="NotFoundError",
                param="model",
                code="model_not_found",
            )

    def parse_chat(self, body: Any) -> tuple[ChatCompletionRequest, RetrievalOptions, list[dict[str, Any]], str]:
        """The engine request, our retrieval extras, the conversation and the query (the last user turn)."""
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        body = dict(body)
        options = validated(RetrievalOptions, {k: body.pop(k) for k in EXTRA_FIELDS if k in body})
        self._check_model(body.get("model"))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("messages must be a non-empty list", param="messages")
        request = validated(ChatCompletionRequest, {**body, "model": self.cfg.llm.model_id})

        system_parts, conversation = [], []
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role == "system":
                system_parts.append(_text_of(message.get("content")))
            elif role in CONVERSATION_ROLES:
                conversation.append({"role": role, "content": _text_of(message.get("content"))})
            else:
                raise bad_request(
                    f"messages[{i}].role must be one of system, user, assistant; got {role!r}",
                    param=f"messages.{i}.role",
                )
        if not conversation or conversation[-1]["role"] != "user":
            raise bad_request("the last message must come from the user", param="messages")
        query = conversation[-1]["content"].strip()
        if not query:
            raise bad_request("the last user message is empty", param="messages")
        if system_parts:  # the client's own instructions follow ours, in the one system message
            conversation.insert(0, {"role": "system", "content": "\n\n".join(system_parts)})
        return request, options, conversation, query

    # ---- retrieval --------------------------------------------------------------------------------------
    async def sources_for(self, query: str, options: RetrievalOptions) -> list[Source]:
        """One Retriever call per question: for hybrid it runs both searches and fuses them, so concurrent
        questions share its Milvus calls and only the top_k passages travel back."""
        mode = options.search or self.cfg.serve.search
        top_k = options.top_k or self.cfg.serve.top_k
        started = time.perf_counter()
        vector = None if mode == "bm25" else (await self.embed([query]))[0]  # BM25 needs no query vector
        sources = await self.retrieve_fn(query, vector, mode, top_k, options.filter)
        self.metrics.retrieval(mode, time.perf_counter() - started)
        return sources

    async def retrieve(self, body: Any) -> dict[str, Any]:
        request = validated(RetrieveRequest, body)
        sources = await self.sources_for(request.query, request)
        return {
            "object": "list",
            "search": request.search or self.cfg.serve.search,
            "data": [s.model_dump() for s in sources],
        }

    async def embeddings(self, body: Any) -> dict[str, Any]:
        request = validated(EmbeddingsRequest, body)
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or not all(isinstance(t, str) and t for t in texts):
            raise bad_request("input must be a non-empty string or list of non-empty strings", param="input")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise bad_request(
                f"input holds {len(texts)} texts; at most {MAX_EMBEDDING_INPUTS} per request", param="input"
            )
        vectors = await self.embed(texts)
        return {
            "object": "list",
            "model": self.cfg.embedder.model,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.cfg.llm.model_id,
                    "object": "model",
                    "created": 0,
                    "owned_by": "rag",
                    "max_model_len": self.cfg.llm.max_model_len,
                },
            ],
        }

    # ---- chat -------------------------------------------------------------------------------------------
    async def chat(self, body: Any) -> dict[str, Any] | AsyncIterator[str]:
        """A response body, or an SSE stream whose first event carries the sources."""
        arrived = time.perf_counter()
        request, options, conversation, query = self.parse_chat(body)
        asked = (request.max_completion_tokens, request.max_tokens)
        max_tokens = next((n for n in asked if n is not None), self.cfg.llm.max_tokens)
        if max_tokens < 1:
            raise bad_request(f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
        if max_tokens >= self.cfg.llm.max_model_len:
            raise bad_request(
                f"max_tokens must be below the context of {self.cfg.llm.max_model_len}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        used = self.prompt.check(conversation, max_tokens=max_tokens)  # a too-long conversation fails before retrieval
        sources = await self.sources_for(query, options)
        messages, sources = self.prompt.build(conversation, sources, max_tokens=max_tokens, used=used)
        update: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "max_completion_tokens": None}
        client_wants_usage = bool(request.stream_options and request.stream_options.include_usage)
        if request.stream:  # the engine's final usage event counts the tokens; the client sees it only if it asked
            asked_options = request.stream_options or StreamOptions()
            update["stream_options"] = asked_options.model_copy(update={"include_usage": True})
        engine_request = request.model_copy(update=update)
        source_dicts = [s.model_dump(include=CHAT_SOURCE_FIELDS) for s in sources]
        self.metrics.passages_returned(len(sources))
        stream = self.generate(engine_request)
        first = await anext(stream)
        if not request.stream:
            if _is_engine_error(first):
                raise from_engine_error(first)
            if first.usage:
                self.metrics.usage(first.usage.prompt_tokens, first.usage.completion_tokens or 0)
            return {**first.model_dump(mode="json", exclude_none=True), "sources": source_dicts}
        if isinstance(first, list) and first and _is_engine_error(first[0]):
            raise from_engine_error(first[0])
        self.metrics.first_token(time.perf_counter() - arrived)
        return self._stream_with_sources(first, stream, source_dicts, client_wants_usage)

    async def _stream_with_sources(
        self, first: list[Any], stream: AsyncIterator[Any], sources: list[dict[str, Any]], client_wants_usage: bool
    ) -> AsyncIterator[str]:
        pending_sources = True

        def events(items: list[Any]) -> list[str]:
            nonlocal pending_sources
            out = []
            for item in items:
                if _is_engine_error(item):
                    error = from_engine_error(item)
                    self.metrics.error(error.type)
                    out.append(error.sse())
                    continue
                # Answer text is JSON-escaped, so only a usage object matches; vLLM writes compact JSON.
                if '"usage":{' in item or '"usage": {' in item:
                    event = json.loads(item[len("data: ") :])
                    if not event.get("choices"):  # the final usage event, not continuous usage stats
                        usage = event["usage"]
                        self.metrics.usage(usage["prompt_tokens"], usage.get("completion_tokens") or 0)
                        if not client_wants_usage:
                            continue
                if pending_sources and item.startswith("data: {"):
                    event = json.loads(item[len("data: ") :])
                    event["sources"] = sources
                    item = f"data: {json.dumps(event)}\n\n"
                    pending_sources = False
                out.append(item)
            return out

        # One write per engine batch (stream_batching_interval_ms), not per token: each write is a message
        # from this replica to the proxy, and on a small host that relaying competes with the engine.
        yield "".join(events(first))
        try:
            async for items in stream:
                if chunk := "".join(events(items)):
                    yield chunk
        except Exception as e:  # the status line is already sent: end the stream with an error event
            error = from_stream_failure(e)
            self.metrics.error(error.type)
            yield error.sse()

    # ---- readiness --------------------------------------------------------------------------------------
    async def ready(self) -> dict[str, Any]:
        """Each part answers a real call within ``serve.ready_timeout_s``: the embedder a query, Milvus a
        search of the collection with that query's vector, the engine one generated token; else a 503 naming
        the parts that did not."""

        async def probe(call: Callable[[], Awaitable[Any]]) -> tuple[str, Any]:
            try:
                result = await asyncio.wait_for(call(), self.cfg.serve.ready_timeout_s)
            except Exception as e:  # noqa: BLE001 - any failure means not ready, and the message says which
                cause = remote_cause(e)
                return (f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__)[:200], None
            if _is_engine_error(result):
                return f"engine error: {result.error.message}"[:200], None
            return "ok", result

        async def embed_then_search() -> tuple[str, str]:
            embedded, vectors = await probe(lambda: self.embed([READY_QUESTION]))
            if embedded != "ok":
                return embedded, "not tried (no query vector)"
            searched, _ = await probe(lambda: self.retrieve_fn(READY_QUESTION, vectors[0], "dense", 1, None))
            return embedded, searched

        def generate() -> Awaitable[Any]:
            request = ChatCompletionRequest(
                model=self.cfg.llm.model_id,
                max_tokens=1,
                stream=False,
                messages=[{"role": "user", "content": READY_QUESTION}],
            )
            return anext(self.generate(request))

        (embedder, milvus), (engine, _) = await asyncio.gather(embed_then_search(), probe(generate))
        parts = {"embedder": embedder, "milvus": milvus, "engine": engine}
        if any(r != "ok" for r in parts.values()):
            raise unavailable("not ready: " + "; ".join(f"{n}: {r}" for n, r in parts.items() if r != "ok"))
        return {"status": "ready", "parts": parts}


def build_fastapi(service: RagService) -> FastAPI:
    """The HTTP routes: a few lines each over ``RagService``; errors leave through the handlers in errors.py."""
    app = FastAPI(title="RAG on Ray", version="0.1.0")
    install_error_handlers(app, on_error=lambda error: service.metrics.error(error.type))
    app.add_middleware(CountRequests, metrics=service.metrics)

    async def json_body(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad_request(f"invalid JSON body: {e}") from None

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        result = await service.chat(await json_body(request))
        if isinstance(result, dict):
            return JSONResponse(result)
        return StreamingResponse(result, media_type="text/event-stream")

    @app.get("/v1/models")
    async def models():
        return service.models()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        return await service.embeddings(await json_body(request))

    @app.post("/v1/retrieve")
    async def retrieve(request: Request):
        return await service.retrieve(await json_body(request))

    @app.get("/healthz")
    async def healthz():
        """Liveness: the ingress answers. Readiness is /readyz."""
        return {"status": "ok", "time": int(time.time())}

    @app.get("/readyz")
    async def readyz():
        return await service.ready()

    return app


class CountRequests:
    """ASGI middleware counting requests by route template and status. Plain ASGI, not Starlette's
    BaseHTTPMiddleware, so streams pass through untouched and a client that leaves still cancels its generation."""

    def __init__(self, app: Any, metrics: ServingMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # an exception that escapes every handler

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST if status == 500 else status  # the client left before an answer
            raise
        finally:
            route = scope.get("route")  # FastAPI's matched route: its template, never the raw path
            self.metrics.request(getattr(route, "path", "unmatched"), status)

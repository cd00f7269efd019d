"""ingress: embed → retrieve → prompt → generate behind an OpenAI-compatible FastAPI app.

``RagService`` holds the logic and takes its parts as async callables, so tests run it with plain
objects and the Serve shell ``RagIngress`` (at the end) runs it with deployment handles.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException

from rag.config import RagConfig
from serve_app.errors import (
    APIError,
    ErrorResponse,
    bad_request,
    from_engine_error,
    from_stream_failure,
    install_error_handlers,
    over_limit,
    remote_cause,
    unavailable,
    unavailable_as_api_error,
)
from serve_app.guards import LimitBody, RequireApiKey
from serve_app.metrics import ServingMetrics
from serve_app.prompt import PromptBuilder
from serve_app.protocol import (
    ChatCompletionRequest,
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EngineErrorResponse,
    RetrievalFields,
    RetrievalFilter,
    RetrievalOptions,
    RetrieveRequest,
    RetrieveResponse,
    SearchMode,
    Source,
    StreamOptions,
)

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]
CountTokensFn = Callable[[list[str]], Awaitable[int]]
RetrieveFn = Callable[[str, list[float] | None, SearchMode, int, RetrievalFilter | None], Awaitable[list[Source]]]
GenerateFn = Callable[[ChatCompletionRequest], AsyncIterator[Any]]
RETRIEVAL_FIELDS = frozenset(RetrievalFields.model_fields)
CONVERSATION_ROLES = ("user", "assistant")
CHAT_PAGE = Path(__file__).with_name("static")
CHAT_PAGE_ASSETS = frozenset({"chat.js", "chat.css"})
# The page runs only its own files: an answer or a passage that slipped past the page's escaping still could not
# load or run a script, reach another origin, or be framed.
CHAT_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
READY_QUESTION = "ready?"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away, as the request counter records it
PROMPT_IS_OURS = "the server builds the prompt from the retrieved passages"
# OpenAI and vLLM parameters that would change the answer, or how its prompt is built, and that this endpoint does
# not support: sent with anything but their default, they get a 400 naming them, never an answer that ignored them.
UNSUPPORTED_PARAMETERS = {
    "n": "one answer per request, with its sources (n=1)",
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "tool calling is not supported",
    "function_call": "tool calling is not supported",
    "use_beam_search": "beam search is not supported",
    "chat_template": PROMPT_IS_OURS,
    "chat_template_kwargs": PROMPT_IS_OURS,
    "documents": PROMPT_IS_OURS,
    "add_generation_prompt": PROMPT_IS_OURS,
    "continue_final_message": PROMPT_IS_OURS,
    "echo": PROMPT_IS_OURS,
    "add_special_tokens": PROMPT_IS_OURS,
    "mm_processor_kwargs": "only text is served",
    "media_io_kwargs": "only text is served",
    "priority": "requests are served in arrival order",
    "kv_transfer_params": "an engine-internal parameter",
    "ec_transfer_params": "an engine-internal parameter",
    "vllm_xargs": "an engine-internal parameter",
}
OPENAI_ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "A request this endpoint refuses: invalid, unsupported, or past one of serve.limits."),
        (401, "A missing or wrong API key (when serve.api_keys_file is set)."),
        (404, "An unknown model."),
        (413, "A body past serve.limits.max_body_bytes."),
        (503, "A full queue or a part that is down: retry after Retry-After seconds."),
    )
}


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
        count_tokens: CountTokensFn,
        retrieve: RetrieveFn,
        generate: GenerateFn,
        prompt: PromptBuilder,
        metrics: ServingMetrics | None = None,
    ):
        self.cfg = cfg
        self.limits = cfg.serve.limits
        self.embed = embed
        self.count_tokens = count_tokens
        self.retrieve_fn = retrieve
        self.generate = generate
        self.prompt = prompt
        self.metrics = metrics or ServingMetrics()

    # ---- validation -------------------------------------------------------------------------------------
    @staticmethod
    def _check_model(model: str | None, served: str) -> None:
        if model is not None and model != served:
            raise APIError(
                404,
                f"The model `{model}` does not exist; this endpoint serves `{served}`.",
                param="model",
                code="model_not_found",
            )

    @staticmethod
    def _refuse_unsupported(request: ChatRequest) -> None:
        extra = request.model_extra or {}
        for name, reason in UNSUPPORTED_PARAMETERS.items():
            field = ChatRequest.model_fields.get(name)
            sent = name in request.model_fields_set if field else extra.get(name) is not None
            if sent and (field is None or getattr(request, name) != field.get_default(call_default_factory=True)):
                raise bad_request(f"`{name}` is not supported: {reason}", param=name, code="unsupported_parameter")

    def _check_text(self, text: str, param: str) -> None:
        if len(text) > self.limits.max_message_chars:
            raise over_limit("max_message_chars", len(text), self.limits.max_message_chars, param)

    def _check_retrieval(self, options: RetrievalFields) -> None:
        if options.top_k is not None and options.top_k > self.limits.max_top_k:
            raise over_limit("max_top_k", options.top_k, self.limits.max_top_k, "top_k")
        if options.filter is not None:
            size = len(options.filter.model_dump_json(exclude_none=True))
            if size > self.limits.max_filter_chars:
                raise over_limit("max_filter_chars", size, self.limits.max_filter_chars, "filter")

    def parse_chat(self, request: ChatRequest) -> tuple[RetrievalOptions, list[dict[str, Any]], str]:
        """Our retrieval extras, the conversation and the query (the last user turn), each checked against the
        limits; a 400 naming what is wrong, before any work is paid for."""
        self._check_model(request.model, self.cfg.llm.model_id)
        self._refuse_unsupported(request)
        self._check_retrieval(request)
        messages = request.messages
        if not messages:
            raise bad_request("messages must be a non-empty list", param="messages")
        if len(messages) > self.limits.max_messages:
            raise over_limit("max_messages", len(messages), self.limits.max_messages, "messages")
        system_parts, conversation = [], []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):  # vLLM's union also parses gpt-oss Harmony messages into objects
                raise bad_request(f"messages[{i}] must be an object with a role and a content", param=f"messages.{i}")
            role = message.get("role")
            text = _text_of(message.get("content"))
            self._check_text(text, f"messages.{i}.content")
            if role == "system":
                system_parts.append(text)
            elif role in CONVERSATION_ROLES:
                conversation.append({"role": role, "content": text})
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
        options = RetrievalOptions(top_k=request.top_k, search=request.search, filter=request.filter)
        return options, conversation, query

    def max_tokens_of(self, request: ChatRequest) -> int:
        asked = (request.max_completion_tokens, request.max_tokens)
        max_tokens = next((n for n in asked if n is not None), self.cfg.llm.max_tokens)
        if max_tokens < 1:
            raise bad_request(f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
        if max_tokens > self.limits.max_tokens:
            raise over_limit("max_tokens", max_tokens, self.limits.max_tokens, "max_tokens")
        if max_tokens >= self.cfg.llm.max_model_len:
            raise bad_request(
                f"max_tokens must be below the context of {self.cfg.llm.max_model_len}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return max_tokens

    # ---- retrieval --------------------------------------------------------------------------------------
    async def sources_for(self, query: str, options: RetrievalFields) -> list[Source]:
        """One Retriever call per question: for hybrid it runs both searches and fuses them, so concurrent
        questions share its Milvus calls and only the top_k passages travel back."""
        mode = options.search or self.cfg.serve.search
        top_k = options.top_k or self.cfg.serve.top_k
        started = time.perf_counter()
        vector = None if mode == "bm25" else (await self.embed([query]))[0]  # BM25 needs no query vector
        sources = await self.retrieve_fn(query, vector, mode, top_k, options.filter)
        self.metrics.retrieval(mode, time.perf_counter() - started)
        return sources

    async def retrieve(self, request: RetrieveRequest) -> dict[str, Any]:
        self._check_text(request.query, "query")
        self._check_retrieval(request)
        sources = await self.sources_for(request.query, request)
        return {
            "object": "list",
            "search": request.search or self.cfg.serve.search,
            "data": [s.model_dump() for s in sources],
        }

    async def embeddings(self, request: EmbeddingsRequest) -> dict[str, Any]:
        self._check_model(request.model, self.cfg.embedder.model)
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or not all(texts):
            raise bad_request("input must be a non-empty string or list of non-empty strings", param="input")
        if len(texts) > self.limits.max_embedding_inputs:
            raise over_limit("max_embedding_inputs", len(texts), self.limits.max_embedding_inputs, "input")
        for i, text in enumerate(texts):
            self._check_text(text, f"input.{i}")
        vectors, tokens = await asyncio.gather(self.embed(texts), self.count_tokens(texts))
        return {
            "object": "list",
            "model": self.cfg.embedder.model,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def models(self) -> dict[str, Any]:
        chat = {"id": self.cfg.llm.model_id, "max_model_len": self.cfg.llm.max_model_len}
        embedder = {"id": self.cfg.embedder.model}
        return {
            "object": "list",
            "data": [{**model, "object": "model", "created": 0, "owned_by": "rag"} for model in (chat, embedder)],
        }

    # ---- chat -------------------------------------------------------------------------------------------
    async def chat(self, request: ChatRequest) -> dict[str, Any] | AsyncIterator[str]:
        """A response body, or an SSE stream whose first event carries the sources."""
        arrived = time.perf_counter()
        options, conversation, query = self.parse_chat(request)
        max_tokens = self.max_tokens_of(request)
        used = self.prompt.check(conversation, max_tokens=max_tokens)  # a too-long conversation fails before retrieval
        sources = await self.sources_for(query, options)
        messages, sources = self.prompt.build(conversation, sources, max_tokens=max_tokens, used=used)
        update: dict[str, Any] = {
            "model": self.cfg.llm.model_id,
            "messages": messages,
            "max_tokens": max_tokens,
            "max_completion_tokens": None,
            "top_k": None,  # ours counts passages; the engine keeps its sampling default
        }
        client_wants_usage = bool(request.stream_options and request.stream_options.include_usage)
        if request.stream:  # the engine's final usage event counts the tokens; the client sees it only if it asked
            asked_options = request.stream_options or StreamOptions()
            update["stream_options"] = asked_options.model_copy(update={"include_usage": True})
        # vLLM's own request class, without our extras: the engine needs nothing of ours to unpickle it.
        values = {name: value for name, value in vars(request).items() if name in ChatCompletionRequest.model_fields}
        engine_request = ChatCompletionRequest.model_construct(
            request.model_fields_set - RETRIEVAL_FIELDS, **{**values, **update}
        )
        source_dicts = [s.model_dump() for s in sources]
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


def build_fastapi(service: RagService, api_keys: list[str] | None = None) -> FastAPI:
    """The HTTP routes: typed bodies, a few lines each over ``RagService``; errors leave through the handlers
    in errors.py, so ``/openapi.json`` describes the API as it answers. ``api_keys``: the keys a request needs."""
    serve_cfg = service.cfg.serve
    app = FastAPI(title="RAG on Ray", version="0.1.0", responses=OPENAI_ERRORS)
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's schema without its 422: a body that does not validate gets OpenAI's 400 here."""
        if app.openapi_schema is None:
            schema = build_schema()
            for operation in (op for path in schema["paths"].values() for op in path.values()):
                operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(name, None)
        return app.openapi_schema

    app.openapi = openapi

    def on_error(error: APIError) -> None:
        service.metrics.error(error.kind)

    install_error_handlers(app, retry_after_s=serve_cfg.retry_after_s, on_error=on_error)
    # Outermost first: count every request, then the key, then the body size; the body is read only for a caller
    # with a key, and parsed only when it is within the limit.
    app.add_middleware(
        LimitBody, max_bytes=serve_cfg.limits.max_body_bytes, on_error=on_error, retry_after_s=serve_cfg.retry_after_s
    )
    if api_keys:
        app.add_middleware(RequireApiKey, keys=api_keys, on_error=on_error, retry_after_s=serve_cfg.retry_after_s)
    app.add_middleware(CountRequests, metrics=service.metrics)
    streamed = {"text/event-stream": {"schema": {"type": "string"}, "example": "data: {...}\n\n"}}

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        responses={200: {"model": ChatResponse, "content": streamed, "description": "The answer, or its SSE stream."}},
    )
    @unavailable_as_api_error
    async def chat_completions(request: ChatRequest) -> JSONResponse | StreamingResponse:
        """OpenAI's chat completions over the retrieved passages; the answer (or the stream's first event) carries
        them as ``sources``. Extras: ``top_k``, ``search``, ``filter``."""
        result = await service.chat(request)
        if isinstance(result, dict):
            return JSONResponse(result)
        return StreamingResponse(result, media_type="text/event-stream")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return service.models()

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse)
    @unavailable_as_api_error
    async def embeddings(request: EmbeddingsRequest) -> dict[str, Any]:
        return await service.embeddings(request)

    @app.post("/v1/retrieve", response_model=RetrieveResponse)
    @unavailable_as_api_error
    async def retrieve(request: RetrieveRequest) -> dict[str, Any]:
        """The passages a question retrieves, with their text, without generating."""
        return await service.retrieve(request)

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        """The chat page (serve_app/static/): a client of this API like any other, with no build step."""
        return FileResponse(CHAT_PAGE / "index.html", headers=CHAT_PAGE_HEADERS)

    app.mount("/static", PageAssets(directory=CHAT_PAGE), name="static")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the ingress answers (no key needed). Readiness is /readyz."""
        return {"status": "ok", "time": int(time.time())}

    @app.get("/readyz")
    async def readyz() -> dict[str, Any]:
        """Readiness: the embedder, Milvus and the engine each answer a real call; else a 503 naming them."""
        return await service.ready()

    return app


class PageAssets(StaticFiles):
    """The page's script and style sheet, and nothing else of the folder: the page itself is served only at /,
    with its Content-Security-Policy."""

    async def get_response(self, path: str, scope: dict[str, Any]) -> Response:
        if path not in CHAT_PAGE_ASSETS:
            raise HTTPException(404)
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


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


@serve.ingress()
class RagIngress:
    """FastAPI ingress; ``__serve_build_asgi_app__`` hands Serve the app built over ``RagService``."""

    @staticmethod
    def get_deployment_options(cfg: RagConfig) -> dict[str, Any]:
        return {"name": "RagIngress", **cfg.serve.deployment_options("ingress")}

    def __init__(
        self,
        cfg: RagConfig,
        model_source: str,
        embedder: DeploymentHandle,
        retriever: DeploymentHandle,
        llm: DeploymentHandle,
    ):
        from transformers import AutoTokenizer

        # A missing or empty keys file fails the replica at start, naming the file: never an open endpoint.
        self.api_keys = cfg.serve.api_keys()
        llm_stream = llm.options(stream=True)  # LLMServer.chat is a generator: without stream=True it raises
        self.service = RagService(
            cfg,
            embed=lambda texts: embedder.embed.remote(texts),
            count_tokens=lambda texts: embedder.count_tokens.remote(texts),
            retrieve=lambda q, v, mode, k, flt: retriever.retrieve.remote(q, v, mode, k, flt),
            generate=lambda request: llm_stream.chat.remote(request),
            prompt=PromptBuilder(AutoTokenizer.from_pretrained(model_source), max_model_len=cfg.llm.max_model_len),
        )

    async def __serve_build_asgi_app__(self):
        return build_fastapi(self.service, self.api_keys)

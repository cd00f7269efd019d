"""Chat completions over retrieved passages: validate, retrieve, fit the prompt, then the engine's answer with its
sources, as one body or as a stream (``chat_stream.py``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from rag.config import RagConfig
from serve_app.errors import bad_request, from_engine_error, over_limit
from serve_app.metrics import ServingMetrics
from serve_app.prompt import PromptBuilder
from serve_app.protocol import (
    ChatCompletionRequest,
    ChatRequest,
    RetrievalFields,
    RetrievalOptions,
    StreamOptions,
    is_engine_error,
)
from serve_app.services.chat_stream import SourcedStream
from serve_app.services.checks import check_model, check_retrieval, check_text
from serve_app.services.parts import GenerateFn
from serve_app.services.retrieval import RetrievalService

CONVERSATION_ROLES = ("user", "assistant")
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
# Ours: they choose the passages, and the engine never sees them (top_k there is vLLM's sampling parameter).
RETRIEVAL_FIELDS = frozenset(RetrievalFields.model_fields)


def text_of(content: Any) -> str:
    """A message's text, whether plain or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass(frozen=True)
class ParsedChat:
    """A checked chat request: its retrieval options, the conversation (plain role/content dicts, the client's
    system text first) and the query, the last user turn."""

    options: RetrievalOptions
    conversation: list[dict[str, Any]]
    query: str


class ChatService:
    def __init__(
        self,
        cfg: RagConfig,
        *,
        retrieval: RetrievalService,
        generate: GenerateFn,
        prompt: PromptBuilder,
        metrics: ServingMetrics,
    ):
        self.cfg, self.limits = cfg, cfg.serve.limits
        self.retrieval, self.generate, self.prompt, self.metrics = retrieval, generate, prompt, metrics

    @staticmethod
    def _refuse_unsupported(request: ChatRequest) -> None:
        extra = request.model_extra or {}
        for name, reason in UNSUPPORTED_PARAMETERS.items():
            field = ChatRequest.model_fields.get(name)
            sent = name in request.model_fields_set if field else extra.get(name) is not None
            if sent and (field is None or getattr(request, name) != field.get_default(call_default_factory=True)):
                raise bad_request(f"`{name}` is not supported: {reason}", param=name, code="unsupported_parameter")

    def parse(self, request: ChatRequest) -> ParsedChat:
        """Our retrieval extras, the conversation and the query, each checked against the limits; a 400 naming what
        is wrong, before any work is paid for."""
        check_model(request.model, self.cfg.llm.model_id)
        self._refuse_unsupported(request)
        check_retrieval(self.limits, request)
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
            text = text_of(message.get("content"))
            check_text(self.limits, text, f"messages.{i}.content")
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
        return ParsedChat(options, conversation, query)

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

    def engine_request(
        self, request: ChatRequest, messages: list[dict[str, Any]], max_tokens: int
    ) -> ChatCompletionRequest:
        """vLLM's own request class with what the client sent of its fields, our prompt and our token cap; none of
        our extras, so the engine needs nothing of ours to unpickle it. A stream always asks the engine for its
        usage, which the metrics count; the client sees it only if it asked."""
        sent = (request.model_fields_set & ChatCompletionRequest.model_fields.keys()) - RETRIEVAL_FIELDS
        body = request.model_dump(include=sent)
        body.update(model=self.cfg.llm.model_id, messages=messages, max_tokens=max_tokens)
        body.pop("max_completion_tokens", None)
        if request.stream:
            asked = request.stream_options or StreamOptions()
            body["stream_options"] = asked.model_copy(update={"include_usage": True}).model_dump()
        return ChatCompletionRequest.model_validate(body)

    async def chat(self, request: ChatRequest) -> dict[str, Any] | AsyncIterator[str]:
        """A response body, or an SSE stream whose first chunk carries the sources."""
        arrived = time.perf_counter()
        parsed = self.parse(request)
        max_tokens = self.max_tokens_of(request)
        used = self.prompt.check(parsed.conversation, max_tokens=max_tokens)  # too long: fails before retrieval
        sources = await self.retrieval.sources_for(parsed.query, parsed.options)
        messages, sources = self.prompt.build(parsed.conversation, sources, max_tokens=max_tokens, used=used)
        source_dicts = [s.model_dump() for s in sources]
        self.metrics.passages_returned(len(sources))
        stream = self.generate(self.engine_request(request, messages, max_tokens))
        first = await anext(stream)
        if not request.stream:
            if is_engine_error(first):
                raise from_engine_error(first)
            if first.usage:
                self.metrics.usage(first.usage.prompt_tokens, first.usage.completion_tokens or 0)
            return {**first.model_dump(mode="json", exclude_none=True), "sources": source_dicts}
        if first and is_engine_error(first[0]):
            raise from_engine_error(first[0])
        self.metrics.first_token(time.perf_counter() - arrived)
        client_wants_usage = bool(request.stream_options and request.stream_options.include_usage)
        rewriter = SourcedStream(source_dicts, client_wants_usage=client_wants_usage, metrics=self.metrics)
        return rewriter.stream(first, stream)

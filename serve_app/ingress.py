"""The RagIngress Serve shell: the HTTP app (``api.py``) over the services, with the other deployments' handles as
their parts. It holds no logic of its own."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from rag.api_keys import read_api_keys
from rag.config import RagConfig
from serve_app.api import build_api
from serve_app.deployment_options import deployment_options
from serve_app.prompt import PromptBuilder
from serve_app.protocol import ChatCompletionRequest
from serve_app.services import Services


@serve.ingress()
class RagIngress:
    """``__serve_build_asgi_app__`` hands Serve the app built over the services."""

    @staticmethod
    def get_deployment_options(cfg: RagConfig) -> dict[str, Any]:
        return {"name": "RagIngress", **deployment_options(cfg.serve.ingress, cfg.serve.retry_after_s)}

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
        self.api_keys = read_api_keys(cfg.serve.api_keys_file)
        llm_stream = llm.options(stream=True)  # LLMServer.chat is a generator: without stream=True it raises

        def generate(request: ChatCompletionRequest) -> Any:
            return llm_stream.chat.remote(request)

        self.services = Services.create(
            cfg,
            embed=lambda texts: embedder.embed.remote(texts),
            count_tokens=lambda texts: embedder.count_tokens.remote(texts),
            retrieve=lambda q, v, mode, k, flt: retriever.retrieve.remote(q, v, mode, k, flt),
            generate=generate,
            prompt=PromptBuilder(AutoTokenizer.from_pretrained(model_source), max_model_len=cfg.llm.max_model_len),
        )

    async def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self.services, self.api_keys)

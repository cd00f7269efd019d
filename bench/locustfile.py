"""Locust users for bench/load.py: each streams chat answers from the app over SSE, one after another, and writes
one JSON line per request (status, TTFT, completion time) to $RAG_LOAD_RECORDS, which load.py reads.

A 503 is the app refusing past its queue: the user waits its Retry-After, as a well-behaved client does."""

import itertools
import json
import os
import time

from locust import HttpUser, task

QUESTIONS = json.loads(os.environ["RAG_LOAD_QUESTIONS"])
RECORDS = open(os.environ["RAG_LOAD_RECORDS"], "a", buffering=1)  # one per locust process, open while it runs
MAX_TOKENS = int(os.environ.get("RAG_LOAD_MAX_TOKENS", "64"))
HEADERS = {"Authorization": f"Bearer {os.environ.get('RAG_LOAD_API_KEY', 'unused')}"}
_next_question = itertools.count()


class StreamingChatUser(HttpUser):
    @task
    def ask(self) -> None:
        question = QUESTIONS[next(_next_question) % len(QUESTIONS)]
        body = {
            "model": "rag",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": MAX_TOKENS,
            "stream": True,
        }
        started, ttft, status, error, retry_after = time.perf_counter(), None, 0, None, 0.0
        try:
            with self.client.post(
                "/v1/chat/completions", json=body, headers=HEADERS, stream=True, catch_response=True, timeout=300
            ) as response:
                status = response.status_code
                if status == 200:
                    for line in response.iter_lines():
                        if not line.startswith(b"data: {"):
                            continue
                        event = json.loads(line[6:])
                        if "error" in event:
                            error = event["error"].get("message", "error event")
                            break
                        if ttft is None and any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                            ttft = time.perf_counter() - started
                    response.success() if error is None else response.failure(error)
                else:
                    error = response.text[:200]
                    retry_after = float(response.headers.get("retry-after", "0"))
                    response.failure(f"{status}: {error}")
        except Exception as e:  # a connection error is a result to count, not a crash
            error = f"{type(e).__name__}: {e}"[:200]
        done = time.perf_counter() - started
        RECORDS.write(json.dumps({"status": status, "ttft": ttft, "seconds": done, "error": error}) + "\n")
        time.sleep(retry_after)

"""``rag ready``: wait until the endpoint's /readyz answers 200, saying meanwhile what it is waiting for."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import IO

PROGRESS_EVERY_S = 10.0


def readyz(url: str, api_key: str | None) -> tuple[bool, str]:
    """One probe: ready or not, and what the endpoint said (or why it said nothing)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(f"{url.rstrip('/')}/readyz", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return True, f"ready: {json.load(response)['parts']}"
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        try:
            body = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        return False, f"{e.code}: {body[:300]}"
    except (urllib.error.URLError, OSError) as e:
        return False, f"no answer: {getattr(e, 'reason', e)}"


def wait_ready(
    url: str, timeout_s: float, *, api_key: str | None = None, progress: IO[str] | None = sys.stderr
) -> bool:
    """Polls ``url``/readyz until it answers 200 (embedder, Milvus and engine all answer) or the time is up; every
    ``PROGRESS_EVERY_S`` it writes the latest answer to ``progress`` (None: silent). ``timeout_s`` 0 asks once
    (a Kubernetes readiness probe)."""
    started = time.monotonic()
    next_note = started + PROGRESS_EVERY_S
    while True:
        ok, said = readyz(url, api_key)
        now = time.monotonic()
        if ok:
            if progress:
                print(said, file=progress)
            return True
        if now - started >= timeout_s:
            print(f"not ready after {timeout_s:.0f} s; last answer {said}", file=sys.stderr)
            return False
        if progress and now >= next_note:
            print(f"waiting for {url}/readyz ({now - started:.0f} s): {said}", file=progress, flush=True)
            next_note = now + PROGRESS_EVERY_S
        time.sleep(2)

"""Binary documents (PDF, DOCX, PPTX) are parsed in a child process with a memory cap and a time limit: PDFium and
the zip and XML readers run C code that a hostile file (a decompression bomb, a page that never finishes) can
drive past any bound, and neither a Python exception nor a signal handler stops C code.

The child is a plain interpreter (``python -m ingest_jobs.sandbox``), started once per parsing process and reused
for every file until one kills it; it never forks the Ray worker it serves. Requests and answers are pickles,
each behind its length, on the child's stdin and stdout.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from ingest_jobs.parse_types import ParsedDocument, ParseSkip
from rag.config import ParseConfig

_HEADER = struct.Struct("!Q")
PR_SET_PDEATHSIG = 1
PEAK_SAMPLE_S = 0.05  # how often a running child's memory is read
MAX_ANSWER_BYTES = 1 << 30  # a parsed document the parent takes in; parse.max_text_chars keeps real ones far below
_children: dict[int, subprocess.Popen[bytes]] = {}  # memory cap -> its child, in this process


def _write(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    return pickle.loads(stream.read(_HEADER.unpack(header)[0]))


def _child(max_memory_bytes: int) -> subprocess.Popen[bytes]:
    child = _children.get(max_memory_bytes)
    if child is None or child.poll() is not None:
        child = subprocess.Popen(
            [sys.executable, "-m", "ingest_jobs.sandbox", str(max_memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},  # Tesseract: one thread, beside the other parse tasks
        )
        _children[max_memory_bytes] = child
    return child


def _resident_peak(pid: int) -> int:
    """The child's resident high-water mark (VmHWM), which Linux resets at exec, unlike getrusage's maxrss that a
    child inherits from its parent; 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) * 1024


def parse_isolated(parser: str, data: bytes, source: str, cfg: ParseConfig) -> ParsedDocument:
    """``parser`` ("module:function", called as ``function(data, source, cfg)``) in the child, under
    ``parse.max_memory_bytes`` of address space and ``parse.timeout_s``; a child that runs out of either, or dies,
    is a ParseSkip with that reason (and the next file gets a new child)."""
    child = _child(cfg.max_memory_bytes)
    assert child.stdin is not None and child.stdout is not None
    answers = child.stdout
    deadline = time.monotonic() + cfg.timeout_s
    peak = 0

    def receive(size: int) -> bytes:
        """``size`` bytes of the answer, waited for until the deadline, the child's memory sampled meanwhile."""
        nonlocal peak
        parts: list[bytes] = []
        while size:
            if not select.select([answers], [], [], min(PEAK_SAMPLE_S, max(0, deadline - time.monotonic())))[0]:
                peak = max(peak, _resident_peak(child.pid))
                if time.monotonic() >= deadline:
                    raise TimeoutError
                continue
            part = os.read(answers.fileno(), min(size, 1 << 20))
            if not part:
                raise EOFError
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    try:
        _write(child.stdin, (parser, data, source, cfg))
        (size,) = _HEADER.unpack(receive(_HEADER.size))
        if size > MAX_ANSWER_BYTES:
            raise ParseSkip(f"the parsed text is over {MAX_ANSWER_BYTES:,} bytes")
        result = pickle.loads(receive(size))
    except TimeoutError:
        _discard(child)
        raise ParseSkip(f"parsing took over parse.timeout_s={cfg.timeout_s:g} s") from None
    except (EOFError, BrokenPipeError):  # killed, or aborted by a failed allocation in C code
        code = _discard(child)
        raise ParseSkip(
            f"the parser died (exit code {code}; resident peak {peak / 2**20:,.0f} MiB, sampled), e.g. past "
            f"parse.max_memory_bytes={cfg.max_memory_bytes:,}"
        ) from None
    except BaseException:  # an answer half read (or a cancelled task) leaves the child out of step: never reuse it
        _discard(child)
        raise
    if isinstance(result, ParseSkip):
        raise result
    doc: ParsedDocument = result
    return doc


def _discard(child: subprocess.Popen[bytes]) -> int:
    child.kill()
    code = child.wait()
    _children.pop(next((k for k, v in _children.items() if v is child), -1), None)
    return code


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: one request, one answer (a ParsedDocument or a ParseSkip), until stdin closes."""
    while True:
        try:
            parser, data, source, cfg = _read(stdin)
        except EOFError:
            return
        module, _, name = parser.partition(":")
        try:
            answer: Any = getattr(importlib.import_module(module), name)(data, source, cfg)
            chars = sum(len(section.text) for section in answer.sections)
            if chars > cfg.max_text_chars:
                raise ParseSkip(f"{chars:,} characters of text > parse.max_text_chars={cfg.max_text_chars:,}")
        except ParseSkip as e:
            answer = e
        except MemoryError:
            answer = ParseSkip(f"needs over parse.max_memory_bytes={cfg.max_memory_bytes:,} bytes to parse")
        except Exception as e:  # whatever a parser library raises for a file it cannot read
            answer = ParseSkip(f"unreadable: {type(e).__name__}: {e}")
        _write(stdout, answer)


def _die_with_parent() -> None:
    """Linux's PR_SET_PDEATHSIG: a child whose Ray worker was killed mid-file must not run on."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed stdin still ends it once the file is done
        pass


if __name__ == "__main__":
    _die_with_parent()
    cap = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the answers
    serve(sys.stdin.buffer, answers)

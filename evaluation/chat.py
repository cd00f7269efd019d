"""Answer quality through the chat endpoint: does the answer cite the gold page, and how close is it to the
reference answer (token F1, no judge model)?"""

from __future__ import annotations

import re
import string
from collections import Counter
from statistics import mean

from openai import OpenAI

from rag.search import Source

CITATION = re.compile(r"\[(\d+)\]")
CHAT_MEASURES = ("gold_in_sources", "gold_cited", "token_f1")


def _tokens(text: str) -> list[str]:
    """SQuAD-style normalisation: lower case, no punctuation, no articles."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return [t for t in text.split() if t not in ("a", "an", "the")]


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = _tokens(prediction), _tokens(reference)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def evaluate_chat(
    base_url: str,
    questions: list[dict[str, str]],
    *,
    model: str = "rag",
    api_key: str = "unused",
    max_tokens: int = 128,
    search: str | None = None,
) -> dict[str, float]:
    """Each question through ``/v1/chat/completions`` with the official client; means over the questions.

    ``gold_in_sources``: the gold page is among the sources returned; ``gold_cited``: the answer cites it as [n].
    """
    client = OpenAI(base_url=base_url, api_key=api_key, timeout=300, max_retries=0)
    extra = {"search": search} if search else {}
    rows = []
    for question in questions:
        response = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question["question"]}],
            max_tokens=max_tokens,
            temperature=0,
            extra_body=extra,
        )
        answer = response.choices[0].message.content or ""
        sources = (response.model_extra or {}).get("sources") or []
        gold = {s["index"] for s in sources if Source.model_validate(s).document_url == question["source_url"]}
        rows.append(
            {
                "gold_in_sources": float(bool(gold)),
                "gold_cited": float(bool(gold & {int(n) for n in CITATION.findall(answer)})),
                "token_f1": token_f1(answer, question.get("answer", "")),
            }
        )
    return {name: mean(r[name] for r in rows) for name in CHAT_MEASURES}

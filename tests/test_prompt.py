import pytest
from transformers import AutoTokenizer

from rag.search import Source
from serve_app.prompt import INSTRUCTIONS, ContextTooLong, PromptBuilder


def source(i: int, words: int = 50) -> Source:
    return Source(
        index=i,
        id=f"c{i}",
        url=f"https://d/{i}",
        title=f"Page {i}",
        heading="A > B",
        source=f"{i}.html",
        doc_type="html",
        score=1.0 / i,
        text=" ".join(["vector"] * words),
    )


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_passages_are_numbered_in_one_system_message(tokenizer):
    builder = PromptBuilder(tokenizer, max_model_len=2048)
    messages, used = builder.build(
        [{"role": "user", "content": "What is HNSW?"}], [source(3), source(7)], max_tokens=100
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith(INSTRUCTIONS)
    assert "[1] Page 3 > A > B (https://d/3)" in messages[0]["content"]
    assert "[2] Page 7 > A > B (https://d/7)" in messages[0]["content"]
    assert [s.index for s in used] == [1, 2] and [s.id for s in used] == ["c3", "c7"]


def test_passages_are_fitted_by_tokens(tokenizer):
    builder = PromptBuilder(tokenizer, max_model_len=600)
    conversation = [{"role": "user", "content": "question"}]
    messages, used = builder.build(conversation, [source(i, words=100) for i in range(1, 10)], max_tokens=100)
    assert 0 < len(used) < 9
    assert builder.count(messages) <= 600 - 100


def test_conversation_longer_than_context_is_a_400(tokenizer):
    builder = PromptBuilder(tokenizer, max_model_len=512)
    with pytest.raises(ContextTooLong) as err:
        builder.build([{"role": "user", "content": "word " * 1000}], [], max_tokens=64)
    assert "exceeds the model's context" in str(err.value)


def test_check_counts_the_conversation_once_for_build(tokenizer):
    class CountingTokenizer:
        renders = 0

        def apply_chat_template(self, *args, **kwargs):
            self.renders += 1
            return tokenizer.apply_chat_template(*args, **kwargs)

        def encode(self, *args, **kwargs):
            return tokenizer.encode(*args, **kwargs)

    counting = CountingTokenizer()
    builder = PromptBuilder(counting, max_model_len=600)
    conversation = [{"role": "user", "content": "question"}]
    sources = [source(i, words=100) for i in range(1, 10)]
    used = builder.check(conversation, max_tokens=100)
    assert used == builder.count([{"role": "system", "content": INSTRUCTIONS}, *conversation])
    renders = counting.renders
    built = builder.build(conversation, sources, max_tokens=100, used=used)
    assert counting.renders == renders  # the passages are counted with encode; the conversation is not re-rendered
    assert built == builder.build(conversation, sources, max_tokens=100)
    with pytest.raises(ContextTooLong) as err:
        builder.check([{"role": "user", "content": "word " * 1000}], max_tokens=64)
    assert "exceeds the model's context" in str(err.value)

from evaluation.faq import extract_faq
from tests.conftest import MILVUS_DOCS

FAQ_PAGES = {
    "https://milvus.io/docs/product_faq.md",
    "https://milvus.io/docs/operational_faq.md",
    "https://milvus.io/docs/performance_faq.md",
}


def test_extracts_the_milvus_team_faq_pairs():
    pairs = extract_faq(MILVUS_DOCS)
    assert len(pairs) == 58
    assert {p["source_url"] for p in pairs} == FAQ_PAGES
    assert all(p["question"].endswith("?") and len(p["answer"]) > 20 for p in pairs)
    assert not any(p["question"] == "Still have questions?" for p in pairs)
    docker = next(p for p in pairs if p["question"] == "Is Docker the only way to install and run Milvus?")
    assert docker["answer"].startswith("Docker is an efficient way to deploy Milvus, but not the only way.")

"""The chat page in a real browser: Debian's Chromium, headless, driven by Playwright, against the session's
Serve app (its Ray cluster, milvus-lite, MiniLM, vLLM CPU with SmolLM2) with API keys on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from rag.milvus_server import start_local, stop_local
from rag.store import MilvusChunkStore
from tests.conftest import API_KEY, AUTH, HOSTILE_URL, LIBTASN1_URL, XSS_IMG, XSS_SCRIPT, answer_eventually

CHROMIUM = "/usr/bin/chromium"  # Debian's (scripts/install.sh); Playwright never downloads one
ANSWER_TIMEOUT_MS = 180_000
PHONE = {"width": 390, "height": 844}
# Records each text the newest answer shows while it is still streaming (aria-busy), as the DOM changes.
WATCH_ANSWER = """() => {
  window.__answers = [];
  new MutationObserver(() => {
    const answer = document.querySelector("#conversation .turn:last-child .answer");
    if (answer && answer.getAttribute("aria-busy") === "true") window.__answers.push(answer.textContent);
  }).observe(document.getElementById("conversation"), { subtree: true, childList: true, characterData: true });
}"""


@pytest.fixture(scope="module")
def browser() -> Browser:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def chunks(rag_app) -> dict[str, set[str]]:
    """The collection's passages by URL."""
    cfg = rag_app[0]
    by_url: dict[str, set[str]] = {}
    for row in MilvusChunkStore(cfg.milvus, cfg.embedder.dim).iter_rows(["url", "text"]):
        by_url.setdefault(row["url"], set()).add(row["text"])
    return by_url


def open_page(browser: Browser, rag_app, **context) -> tuple[Page, list[dict]]:
    """The page, unlocked with the API key it asks for; and the chat request bodies it sends, as sent."""
    page = browser.new_context(**context).new_page()
    bodies: list[dict] = []
    page.on("request", lambda r: r.url.endswith("/v1/chat/completions") and bodies.append(json.loads(r.post_data)))
    page.goto(rag_app[1].removesuffix("v1"))
    expect(page.locator("#notice")).to_contain_text("needs an API key")  # /v1/models answered 401
    enter_key(page, API_KEY)
    expect(page.locator("#model")).to_have_text("model: rag")
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.get_by_label("API key")).to_be_hidden()  # the key works: the field goes
    return page, bodies


def enter_key(page: Page, key: str) -> None:
    field = page.get_by_label("API key")
    expect(field).to_be_visible()
    field.fill(key)
    field.press("Tab")


def ask(page: Page, question: str) -> Locator:
    """Types the question, sends it with Enter, and returns its turn once the answer is complete."""
    box = page.get_by_label("Question")
    box.fill(question)
    box.press("Enter")
    turn = page.locator("#conversation .turn").last
    expect(turn.locator(".question")).to_have_text(question)
    expect(turn.locator(".answer")).to_have_attribute("aria-busy", "false", timeout=ANSWER_TIMEOUT_MS)
    return turn


def test_ask_stream_sources_passages_controls_and_history(browser, rag_app, chunks, tmp_path):
    page, bodies = open_page(browser, rag_app)
    page.evaluate(WATCH_ANSWER)

    first = ask(page, "How do I enable RBAC and create a user with a role?")
    final = first.locator(".answer").text_content()
    seen = [t for t in dict.fromkeys(page.evaluate("window.__answers")) if t.strip()]
    assert final.strip() and len(seen) >= 2, seen  # the answer grew while it streamed
    assert [len(t) for t in seen] == sorted(len(t) for t in seen) and seen[0] != final, seen
    expect(first.locator(".turn-status")).to_be_hidden()  # no error, not stopped

    links = first.locator("a.source-link")
    expect(links.first).to_be_visible()
    hrefs = links.evaluate_all("links => links.map(a => a.href)")
    assert hrefs and {h.split("#page=")[0] for h in hrefs} <= set(chunks), hrefs
    assert "https://milvus.io/docs/rbac.md" in hrefs
    assert links.first.get_attribute("rel") == "noopener noreferrer"

    source = first.locator(".sources li").first
    passage = source.locator(".passage")
    expect(passage).to_be_hidden()
    source.get_by_role("button", name="Show passage").click()
    expect(passage).to_be_visible()
    assert passage.text_content() in chunks[source.locator("a.source-link").get_attribute("href")]
    expect(source.get_by_role("button", name="Hide passage")).to_have_attribute("aria-expanded", "true")
    assert bodies[0]["stream"] is True and bodies[0]["messages"] == [
        {"role": "user", "content": bodies[0]["messages"][0]["content"]}
    ]
    assert not {"search", "top_k", "filter", "temperature"} & set(bodies[0])  # the server's defaults

    page.get_by_label("Search").select_option("bm25")
    page.get_by_label("Passages (top_k)").fill("3")
    page.get_by_label("URL prefix").fill("https://milvus.io/docs/")
    second = ask(page, "Which users and roles does it create?")
    sent = bodies[-1]
    assert (
        sent["search"] == "bm25" and sent["top_k"] == 3 and sent["filter"] == {"url_prefix": "https://milvus.io/docs/"}
    )
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]  # the conversation so far
    assert sent["messages"][1]["content"] == final
    second_hrefs = second.locator("a.source-link").evaluate_all("links => links.map(a => a.href)")
    assert 1 <= len(second_hrefs) <= 3 and all(h.startswith("https://milvus.io/docs/") for h in second_hrefs)
    page.screenshot(path=tmp_path / "chat-page.png", full_page=True)
    assert (tmp_path / "chat-page.png").stat().st_size > 10_000

    page.get_by_role("button", name="New chat").click()
    expect(page.locator("#conversation .turn")).to_have_count(0)
    ask(page, "What is the chunk cache?")
    assert len(bodies[-1]["messages"]) == 1


def test_cited_numbers_link_to_their_sources(browser, rag_app):
    """SmolLM2-135M does not write [n] citations, so the page's own Turn is handed what a citing model's stream
    would carry: the sources the API retrieves for the question (real ones, from /v1/retrieve) and an answer
    citing them. Each [n] of a listed source becomes a link that opens its passage; a number with no source stays
    text."""
    page, _ = open_page(browser, rag_app)
    page.evaluate(
        """async (key) => {
          const response = await fetch("v1/retrieve", {
            method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
            body: JSON.stringify({ query: "What is the chunk cache?", top_k: 3 }),
          });
          const turn = new Turn("What is the chunk cache?");
          turn.renderSources((await response.json()).data);
          turn.append("The chunk cache [1] keeps data near the query nodes [2, 3]. [9] is no source.");
          turn.finish("");
        }""",
        API_KEY,
    )
    turn = page.locator("#conversation .turn").last
    citations = turn.locator("a.citation")
    expect(citations).to_have_text(["[1]", "[2]", "[3]"])
    expect(turn.locator(".answer")).to_contain_text("[9] is no source")
    expect(turn.locator(".sources li").nth(1).locator(".passage")).to_be_hidden()
    citations.nth(1).click()
    expect(turn.locator(".sources li").nth(1).locator(".passage")).to_be_visible()
    expect(turn.locator(".sources li").nth(1).locator(".show-passage")).to_be_focused()


def test_stop_keeps_the_partial_answer_and_new_chat_drops_a_running_one(browser, rag_app):
    page, bodies = open_page(browser, rag_app)
    box = page.get_by_label("Question")
    box.fill("What is the chunk cache?")
    box.press("Shift+Enter")  # a new line, not a send
    box.press_sequentially("And how is it configured?")
    assert box.input_value() == "What is the chunk cache?\nAnd how is it configured?" and not bodies
    box.press("Enter")
    turn = page.locator("#conversation .turn").last
    expect(turn.locator(".answer")).not_to_be_empty(timeout=ANSWER_TIMEOUT_MS)
    page.keyboard.press("Escape")  # Stop, from the keyboard, while the answer streams
    expect(turn.locator(".turn-status")).to_have_text("Stopped.")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    partial = turn.locator(".answer").text_content()
    assert partial

    follow_up = ask(page, "Where is it set?")
    assert bodies[-1]["messages"][1] == {"role": "assistant", "content": partial}  # as far as it went
    expect(follow_up.locator(".turn-status")).to_be_hidden()

    box.fill("What is RBAC?")
    box.press("Enter")
    page.get_by_role("button", name="New chat").click()  # while that answer runs: it is dropped with its chat
    expect(page.locator("#conversation .turn")).to_have_count(0)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    ask(page, "What is the chunk cache?")
    assert len(bodies[-1]["messages"]) == 1
    expect(page.locator("#conversation .turn")).to_have_count(1)


def test_page_text_is_never_html_and_no_payload_runs(browser, rag_app, chunks):
    """A page whose title, heading, text and canonical URL are script payloads, ingested by the real job and
    retrieved by BM25, shows them as text on a phone-sized screen: no element made from them, no link to the
    javascript: URL, and the flag each payload sets stays unset, with the CSP off."""
    assert HOSTILE_URL in chunks  # the job kept the hostile page as data
    # Without the page's CSP, which would block an inline payload even if the page inserted it as HTML: the
    # flag then says whether the page's own escaping held.
    page, _ = open_page(browser, rag_app, viewport=PHONE, bypass_csp=True)
    page.get_by_label("Search").select_option("bm25")
    turn = ask(page, "zebra crossing payload")
    hostile = turn.locator(".sources li", has=page.locator(".url", has_text=HOSTILE_URL))
    expect(hostile).to_have_count(1)
    expect(hostile.locator(".source-title")).to_contain_text(XSS_IMG)  # as text, with its angle brackets
    hostile.get_by_role("button", name="Show passage").click()
    expect(hostile.locator(".passage")).to_contain_text(XSS_SCRIPT)
    assert page.locator("#conversation img, #conversation script, a[href^='javascript']").count() == 0
    page.wait_for_timeout(1000)  # an img's onerror fires after its failed load
    assert page.evaluate("window.__xss") is None
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # fits the phone

    control = browser.new_page()  # the same payload inserted as HTML does run
    control.set_content("<div id=target></div>")
    control.evaluate("html => { document.getElementById('target').innerHTML = html }", XSS_IMG)
    control.wait_for_function("window.__xss === 1")


def test_errors_show_as_readable_messages(browser, rag_app):
    page = browser.new_page()
    page.goto(rag_app[1].removesuffix("v1"))
    enter_key(page, "sk-wrong")
    expect(page.locator("#notice")).to_contain_text("Incorrect API key")
    turn = ask(page, "What is the chunk cache?")
    error = turn.locator(".turn-status")
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_contain_text("needs an API key")
    assert page.evaluate("sessionStorage.getItem('rag.apiKey')") == "sk-wrong"
    assert page.evaluate("localStorage.length") == 0  # the key never outlives the tab

    enter_key(page, API_KEY)
    expect(page.locator("#model")).to_have_text("model: rag")
    page.get_by_label("Passages (top_k)").fill("51")
    turn = ask(page, "What is the chunk cache?")
    expect(turn.locator(".turn-status")).to_contain_text("Error 400: top_k is 51; the limit serve.limits.max_top_k")
    expect(page.get_by_label("Question")).to_have_value("What is the chunk cache?")  # one key press sends it again


def test_an_unavailable_part_shows_when_to_retry(browser, rag_app, milvus_server):
    page, _ = open_page(browser, rag_app)
    stop_local(milvus_server)
    try:
        turn = ask(page, "What is the chunk cache?")
    finally:
        start_local(milvus_server)
    expect(turn.locator(".turn-status")).to_contain_text("Busy, retry in 5 s: Milvus is unavailable")
    answer_eventually(  # the app answers again once gRPC reconnects, for the tests after this one
        lambda: httpx.post(f"{rag_app[1]}/retrieve", json={"query": "chunk cache"}, headers=AUTH).raise_for_status(),
        httpx.HTTPStatusError,
        lambda e: e.response.status_code == 503,
        timeout_s=30,
    )


def test_the_page_works_offline_with_its_own_files_only(browser, rag_app):
    page = browser.new_page()
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(rag_app[1].removesuffix("v1"))
    expect(page.get_by_label("API key")).to_be_visible()
    origin = rag_app[1].removesuffix("/v1")
    assert fetched and all(url.startswith(origin) for url in fetched), fetched
    assert {Path(u).name for u in fetched} >= {"chat.js", "chat.css", "models"}


def test_the_page_and_its_icon_load_with_no_missing_file(browser, rag_app):
    """Every file the page asks for is there: a 404 (a browser's /favicon.ico once was one) is a console error."""
    page = browser.new_context().new_page()
    missing: list[str] = []
    page.on("response", lambda response: response.status == 404 and missing.append(response.url))
    page.goto(rag_app[1].removesuffix("v1"))
    expect(page.locator("#notice")).to_contain_text("needs an API key")
    page.wait_for_load_state("networkidle")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    served = httpx.get(rag_app[1].removesuffix("v1") + icon)
    assert missing == [] and served.status_code == 200 and served.headers["content-type"] == "image/svg+xml"
    page.close()


def test_a_pdf_source_shows_its_page_and_links_to_it(browser, rag_app):
    page, bodies = open_page(browser, rag_app)
    page.get_by_label("URL prefix").fill(LIBTASN1_URL)
    turn = ask(page, "What does asn1Coding generate from ASN.1 definitions?")
    assert bodies[-1]["filter"] == {"url_prefix": LIBTASN1_URL}
    pages = turn.locator(".sources li a.page")
    expect(pages.first).to_be_visible()
    labels = pages.evaluate_all("links => links.map(a => [a.textContent.trim(), a.href])")
    assert labels and all(re.fullmatch(r"p\. \d+", text) for text, _ in labels), labels
    assert all(href == f"{LIBTASN1_URL}#page={text[3:]}" for text, href in labels), labels
    page.close()

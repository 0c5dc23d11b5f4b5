"""The web page in a real browser: headless Chromium (Debian's) driven by Playwright.

Each test serves an app on SQLite and a local folder over real HTTP and checks what a
visitor sees: no console errors or failed requests, images that render, filters that
filter, copy buttons that copy, Swagger UI that shows the operations, a playground that
explains a refusal, and a mockup page of 24 narrow ``/face/view`` tags that all render.
Timeouts are generous: they guard against hangs, not against a slow machine.
"""

from __future__ import annotations

import itertools
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from catalog.services import find_service
from catalog.sql import db, serving
from catalog.storage import Storage
from tests.browser.server import (
    ALL_IMAGES_SETTLED,
    CHROMIUM,
    IMAGE_WIDTHS,
    Watcher,
    serve,
    static_page,
)
from tests.conftest import REPO_ROOT_MODELS, unavailable
from tests.factories import make_face

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture reports it
    expect = None

WAIT_MS = 120_000  # for pages and images; the mockup's on-demand faces get more


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (fails under CI=true when it is missing)."""
    if not Path(CHROMIUM).is_file():
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - dev extra not installed
        unavailable(f"playwright is not installed: {exc}")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


Site = tuple[Flask, str]


@pytest.fixture
def site_factory(sqlite_template: Path, tmp_path: Path) -> Iterator[Callable[..., Site]]:
    """``site_factory(**settings)``: an app on a fresh SQLite copy, served over HTTP."""
    with ExitStack() as stack:
        numbers = itertools.count()

        def factory(**overrides: Any) -> Site:
            folder = tmp_path / f"site{next(numbers)}"
            folder.mkdir()
            shutil.copyfile(sqlite_template, folder / "facecat.db")
            config = {
                "TESTING": True,
                "DATABASE_URL": f"sqlite:///{folder / 'facecat.db'}",
                "STORAGE_URL": (folder / "objects").as_uri(),
                "ONDEMAND_ENABLED": False,
                **overrides,
            }
            app = create_app(config)
            stack.callback(db.dispose, app)
            stack.callback(serving.shutdown, app)
            return app, stack.enter_context(serve(app))

        yield factory


@pytest.fixture
def stack_server() -> Iterator[Callable[..., str]]:
    """``stack_server(wsgi_app)``: serve another app (a mockup page) until the test ends."""
    with ExitStack() as stack:
        yield lambda app: stack.enter_context(serve(app))


def add_faces(app: Flask, faces: list[tuple[str, int]], size: int = 64) -> None:
    """Store real (one-colour) JPEG faces of these genders and ages."""
    with db.session_scope(app) as session:
        for gender, age in faces:
            make_face(session, find_service(Storage, app), gender=gender, age=age, size=size)


def open_page(browser: Any, url: str, *expected: int, **context: Any) -> tuple[Any, Watcher]:
    """A new page in its own context, watched, at ``url`` with every image settled."""
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(WAIT_MS)
    watcher = Watcher(expected_statuses=set(expected)).attach(page)
    page.goto(url)
    return page, watcher


def gallery(page: Any) -> list[tuple[str, int]]:
    """(gender, age) of every face card shown."""
    cards = page.locator("ul.faces li.face")
    return [
        (card.get_attribute("data-gender"), int(card.get_attribute("data-age")))
        for card in cards.all()
    ]


# What a screen reader or keyboard user would miss: images without alt text, form fields
# without a label, buttons without a name, heading levels that skip (h2 to h4).
ACCESSIBILITY_GAPS = """() => {
  const gaps = [];
  for (const img of document.images) if (!img.alt) gaps.push("no alt: " + img.src);
  for (const field of document.querySelectorAll("input, select, textarea")) {
    if (!field.labels || field.labels.length === 0) gaps.push("no label: #" + field.id);
  }
  for (const button of document.querySelectorAll("button")) {
    const name = button.getAttribute("aria-label") || button.textContent.trim();
    if (!name) gaps.push("unnamed button");
  }
  let level = 0;
  for (const heading of document.querySelectorAll("h1, h2, h3, h4, h5, h6")) {
    const next = Number(heading.tagName[1]);
    if (next > level + 1) gaps.push("heading skips to " + heading.tagName);
    level = next;
  }
  return gaps;
}"""

FACES = [("female", 8), ("female", 25), ("female", 31), ("male", 40), ("male", 65), ("male", 72)]


def test_page_loads_cleanly_and_every_face_renders(browser: Any, site_factory: Any) -> None:
    app, url = site_factory()
    add_faces(app, FACES)
    page, watcher = open_page(browser, url + "/")
    page.wait_for_function(ALL_IMAGES_SETTLED)
    widths = page.evaluate(IMAGE_WIDTHS)
    assert len(widths) == len(FACES) and all(width > 0 for width in widths), widths
    assert sorted(gallery(page)) == sorted(FACES)
    for image in page.locator("ul.faces img").all():
        assert re.fullmatch(r"Generated face: (female|male), age \d+", image.get_attribute("alt"))
    assert page.evaluate(ACCESSIBILITY_GAPS) == []
    # The coverage table shows the same counts as /stats.
    assert page.locator("#coverage-total").inner_text() == str(len(FACES))
    adults = page.locator('tr[data-gender="female"][data-band="20-39"] td[data-count]')
    assert adults.inner_text() == "2"
    assert watcher.problems() == []


def test_api_reference_renders_the_operations_of_openapi_json(
    browser: Any, site_factory: Any
) -> None:
    _, url = site_factory()
    page, watcher = open_page(browser, url + "/docs")
    paths = page.locator(".opblock-summary-path")
    paths.filter(has_text="/face/json").first.wait_for()
    shown = set(paths.all_inner_texts())
    assert {"/face/json", "/face/view", "/api/v1/generate", "/stats"} <= {
        text.replace("\u200b", "").strip() for text in shown
    }
    assert watcher.problems() == []


def test_filters_show_only_faces_of_that_gender_and_age(browser: Any, site_factory: Any) -> None:
    app, url = site_factory()
    add_faces(app, FACES)
    page, watcher = open_page(browser, url + "/")
    form = page.locator("#filters")
    form.get_by_label("Gender").select_option("male")
    form.get_by_label("Minimum age").fill("60")
    page.get_by_role("button", name="Show faces").click()
    page.wait_for_url(re.compile(r"gender=male"))
    page.wait_for_function(ALL_IMAGES_SETTLED)
    assert sorted(gallery(page)) == [("male", 65), ("male", 72)]
    assert all(width > 0 for width in page.evaluate(IMAGE_WIDTHS))
    # The snippet for the filter asks the API for the same faces.
    assert "/face/view?gender=male&amp;minimum_age=60" in page.content()

    form.get_by_label("Gender").select_option("female")
    form.get_by_label("Minimum age").fill("90")
    page.get_by_role("button", name="Show faces").click()
    page.wait_for_url(re.compile(r"gender=female"))
    assert gallery(page) == []
    assert "No stored face matches" in page.locator("#gallery-empty").inner_text()
    assert watcher.problems() == []


def test_copy_buttons_copy_the_img_snippet_and_json_url(browser: Any, site_factory: Any) -> None:
    app, url = site_factory()
    add_faces(app, [("female", 31)])
    page, watcher = open_page(browser, url + "/", permissions=["clipboard-read", "clipboard-write"])
    card = page.locator("ul.faces li.face").first
    source = card.locator("a").get_attribute("href")
    assert re.fullmatch(re.escape(url) + r"/img/faces/female_31_[0-9a-f]{40}\.jpg", source)

    card.get_by_role("button", name=re.compile("Copy the img snippet")).focus()
    page.keyboard.press("Enter")  # keyboard-usable, not only clickable
    expect(page.locator("#copy-status")).to_have_text("Copied <img>")
    expected = f'<img src="{source}" alt="Generated face: female, age 31">'
    assert page.evaluate("() => navigator.clipboard.readText()") == expected

    card.get_by_role("button", name=re.compile("Copy the JSON URL")).click()
    expect(page.locator("#copy-status")).to_have_text("Copied JSON URL")
    json_url = page.evaluate("() => navigator.clipboard.readText()")
    face_id = re.fullmatch(re.escape(url) + r"/api/v1/faces/(\d+)", json_url)
    assert face_id, json_url
    body = page.request.get(json_url).json()
    assert body["gender"] == "female" and body["age"] == 31 and body["image_url"] == source
    assert watcher.problems() == []


def test_playground_explains_an_anonymous_seeded_request(browser: Any, site_factory: Any) -> None:
    _, url = site_factory()
    page, watcher = open_page(browser, url + "/", 403)
    page.locator("#gen-seed").fill("42")
    page.locator("#gen-age").fill("30")
    page.get_by_role("button", name="Generate", exact=True).click()
    status = page.locator("#generate-status")
    expect(status).to_have_text(re.compile("^Error"))
    text = status.inner_text()
    print(f"\nplayground says: {text}")
    assert text.startswith("Error 403")
    assert "professional" in text and "{" not in text  # a sentence, not a JSON dump

    status.evaluate("(element) => { element.textContent = ''; }")
    page.get_by_role("button", name=re.compile("Lifetime strip")).click()
    expect(status).to_have_text(re.compile("^Error 403"))
    assert page.locator("#lifetime-strip li").count() == 0
    assert watcher.problems() == []


# --- a mockup page of 24 narrow filters, some met only by on-demand generation ------------

# 12 three-year windows across ages, both genders: 24 <img> tags.
WINDOWS = [
    (gender, low, low + 2)
    for low in (3, 10, 17, 22, 26, 30, 34, 38, 45, 52, 60, 70)
    for gender in ("female", "male")
]
# Left empty, so the service makes it on demand (a common cell, reachable in seconds).
# One window only: a second would wait in real seconds for the process's one generation
# slot while the first is made, and on a loaded CI machine that wait could run out.
ON_DEMAND = {("female", 26, 28)}


@pytest.mark.model
@pytest.mark.slow
def test_mockup_of_24_narrow_filters_renders_every_face(
    browser: Any, site_factory: Any, stack_server: Callable[..., str]
) -> None:
    from ingest.ondemand.ports import FaceSupplier

    models = REPO_ROOT_MODELS
    if not (models / "mobilestylegan" / "SynthesisNetwork.bin").is_file():
        unavailable(f"photoreal weights are not in {models}: run `facecat models fetch`")
    app, url = site_factory(
        ONDEMAND_ENABLED=True,
        MODELS_DIR=str(models),
        DEVICE="cpu",
        TORCH_THREADS=2,
        ONDEMAND_BUDGET_SECONDS=120.0,
    )
    # The budget counts each request thread's looks at the clock (about one per batch),
    # not wall time, so a busy machine takes longer instead of running out of budget.
    looks = threading.local()

    def clock() -> float:
        looks.n = getattr(looks, "n", 0) + 1
        return float(looks.n)

    find_service(FaceSupplier, app).clock = clock
    add_faces(app, [(g, low + 1) for g, low, high in WINDOWS if (g, low, high) not in ON_DEMAND])

    tags = "\n".join(
        f'<img src="{url}/face/view/{n}?gender={g}&minimum_age={low}&maximum_age={high}"'
        f' alt="{g}, {low} to {high}" width="64" height="64">'
        for n, (g, low, high) in enumerate(WINDOWS)
    )
    html = f"<!doctype html><title>mockup</title><h1>Team</h1>{tags}"
    mockup = stack_server(static_page(html))
    page = browser.new_context().new_page()
    watcher = Watcher().attach(page)
    redirects: dict[str, str] = {}  # each /face/view URL -> the image it was sent to
    page.on(
        "response",
        lambda r: redirects.__setitem__(r.url, r.headers["location"]) if r.status == 302 else None,
    )
    started = time.monotonic()
    page.goto(mockup + "/mockup.html", wait_until="commit")
    page.wait_for_function(ALL_IMAGES_SETTLED, timeout=600_000)
    elapsed = time.monotonic() - started
    sources = page.evaluate("() => Array.from(document.images).map((img) => img.currentSrc)")
    widths = page.evaluate(IMAGE_WIDTHS)
    rendered = sum(width > 0 for width in widths)
    print(f"\nmockup: {rendered} of {len(WINDOWS)} faces rendered in {elapsed:.1f} s")
    missing = [
        f"{source}: {redirects.get(source) or 'no redirect'}"
        for source, width in zip(sources, widths, strict=True)
        if not width
    ]
    assert rendered == len(WINDOWS) == 24, (missing, watcher.problems())
    for (gender, low, high), source in zip(WINDOWS, sources, strict=True):
        target = redirects[source]
        match = re.search(r"/img/faces/(female|male)_(\d+)_[0-9a-f]{40}\.jpg$", target)
        assert match, (source, target)
        assert match[1] == gender and low <= int(match[2]) <= high, (source, target)
    assert watcher.problems() == []

"""Retake the screenshots in docs/screenshots/ of the page at ``/`` and of ``/docs``.

Run against a catalog of real faces (the page is only as good as what it shows), e.g.::

    export FACECAT_DATABASE_URL=sqlite:////tmp/shots/facecat.db
    export FACECAT_STORAGE_URL=file:///tmp/shots/objects
    .venv/bin/facecat db upgrade && .venv/bin/facecat ingest run --count 60 --max-admitted 40
    .venv/bin/python -m tests.browser.screenshots

The app is built from the ``FACECAT_*`` environment as ``facecat run`` would build it,
served on a free loopback port, and photographed by Debian's headless Chromium. PNGs are
reduced to a palette (and, if still too big, scaled down) to stay under ``--max-bytes``.
"""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path
from typing import Any

from PIL import Image

from app import create_app
from tests.browser.server import ALL_IMAGES_SETTLED, CHROMIUM, Watcher, serve

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def shrink(png: bytes, max_bytes: int) -> bytes:
    """``png`` as is when small enough, else quantised to 256 colours, scaled down if need be."""
    if len(png) <= max_bytes:
        return png
    original = Image.open(io.BytesIO(png)).convert("RGB")
    for scale, colours in ((1.0, 256), (1.0, 128), (0.75, 256), (0.5, 256)):
        size = (round(original.width * scale), round(original.height * scale))
        image = original if scale == 1.0 else original.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        # No dithering: on photos it adds noise that PNG compresses badly.
        image.quantize(colours, dither=Image.Dither.NONE).save(buffer, "PNG", optimize=True)
        if buffer.tell() <= max_bytes:
            break
    return buffer.getvalue()


def shoot(browser: Any, url: str, path: Path, viewport: dict[str, int], max_bytes: int) -> None:
    """A full-page screenshot of ``url`` once its images (or Swagger UI) have settled."""
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    page = context.new_page()
    watcher = Watcher().attach(page)
    page.goto(url)
    if url.endswith("/docs"):
        page.locator(".opblock-summary-path").first.wait_for(timeout=60_000)
    elif page.locator("img").count():
        page.wait_for_function(ALL_IMAGES_SETTLED, timeout=120_000)
    data = shrink(page.screenshot(full_page=True), max_bytes)
    path.write_bytes(data)
    context.close()
    problems = watcher.problems()
    print(f"{path.name}: {len(data) // 1024} KB" + (f", problems: {problems}" if problems else ""))


def professional_key(app: Any) -> str:
    """A new professional key in the app's database (seeds need one), as ``keys create``."""
    owner, name = "screenshots@example.com", "screenshots"
    result = app.test_cli_runner().invoke(
        args=["keys", "create", "--owner", owner, "--name", name, "--class", "professional"]
    )
    match = re.search(r"\bfc_[0-9a-f]{12}_\S+", result.output)
    if match is None:
        raise SystemExit(f"could not create a key: {result.output}")
    return match[0]


def lifetime(browser: Any, url: str, key: str, path: Path, max_bytes: int) -> None:
    """The playground after a lifetime strip: one seed at six ages, with a key."""
    context = browser.new_context(viewport=DESKTOP, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{url}/#playground")
    page.locator("#api-key").fill(key)
    page.locator("#gen-seed").fill("42")
    page.locator("#gen-gender").select_option("female")
    page.get_by_role("button", name="Lifetime strip").click()
    ages = page.locator("#generate-form").get_attribute("data-ages").split(",")
    page.locator("#lifetime-strip li").nth(len(ages) - 1).wait_for(timeout=600_000)
    page.wait_for_function(ALL_IMAGES_SETTLED, timeout=120_000)
    data = shrink(page.locator("#playground").screenshot(), max_bytes)
    path.write_bytes(data)
    context.close()
    print(f"{path.name}: {len(data) // 1024} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--max-bytes", type=int, default=400_000)
    parser.add_argument("--query", default="", help="filters for the gallery, e.g. gender=female")
    parser.add_argument(
        "--no-lifetime",
        action="store_true",
        help="skip the playground's lifetime strip (it creates a professional key in the "
        "catalog's database and renders six seeded faces)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    app = create_app()
    with serve(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        home = f"{url}/?{args.query}" if args.query else f"{url}/"
        shoot(browser, home, args.out / "page-desktop.png", DESKTOP, args.max_bytes)
        shoot(browser, home, args.out / "page-phone.png", PHONE, args.max_bytes)
        shoot(browser, f"{url}/docs", args.out / "docs-desktop.png", DESKTOP, args.max_bytes)
        if not args.no_lifetime:
            key = professional_key(app)
            path = args.out / "playground-lifetime.png"
            lifetime(browser, url, key, path, args.max_bytes)
        browser.close()


if __name__ == "__main__":
    main()

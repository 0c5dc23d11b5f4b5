"""Documentation that must not drift from the code (Datasette's test_docs.py idea)."""

from __future__ import annotations

import re

from catalog import settings_docs
from catalog.config import SETTINGS

FIX = "regenerate with `.venv/bin/python -m catalog.settings_docs`"
README = settings_docs.ROOT / "README.md"
DOCS = settings_docs.ROOT / "docs"
API_DOC = DOCS / "api.md"
README_MAX_LINES = 200


def test_config_doc_settings_table_is_generated_from_the_declarations() -> None:
    doc = settings_docs.CONFIG_DOC.read_text(encoding="utf-8")
    assert settings_docs.doc_table(doc) == settings_docs.markdown_table(), FIX


def test_config_doc_lists_exactly_the_declared_settings() -> None:
    table = settings_docs.doc_table(settings_docs.CONFIG_DOC.read_text(encoding="utf-8"))
    listed = re.findall(r"^\| `(FACECAT_[A-Z0-9_]+)` \|", table, flags=re.M)
    assert listed == [s.env for s in SETTINGS], FIX


def test_env_example_lists_exactly_the_declared_settings() -> None:
    text = settings_docs.ENV_EXAMPLE.read_text(encoding="utf-8")
    assert text == settings_docs.env_example(), FIX
    listed = re.findall(r"^# (FACECAT_[A-Z0-9_]+)=", text, flags=re.M)
    assert listed == [s.env for s in SETTINGS]


def test_api_doc_documents_every_endpoint() -> None:
    from catalog.web.openapi_paths import PATHS

    doc = API_DOC.read_text(encoding="utf-8")
    for path in PATHS:
        stem = path.split("{")[0].rstrip("/") or path
        assert stem in doc, f"docs/api.md does not mention {path}"


def test_readme_is_short_and_links_every_docs_page() -> None:
    readme = README.read_text(encoding="utf-8")
    lines = readme.count("\n") + (not readme.endswith("\n"))
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ has no pages"
    for page in pages:
        link = page.relative_to(settings_docs.ROOT).as_posix()
        assert f"]({link}" in readme, f"README.md does not link {link}"

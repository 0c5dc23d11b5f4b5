"""Documentation that must not drift from the code (Datasette's test_docs.py idea)."""

from __future__ import annotations

import re

from catalog import settings_docs
from catalog.config import SETTINGS

FIX = "regenerate with `.venv/bin/python -m catalog.settings_docs`"


def test_readme_settings_table_is_generated_from_the_declarations() -> None:
    readme = settings_docs.README.read_text(encoding="utf-8")
    assert settings_docs.readme_table(readme) == settings_docs.markdown_table(), FIX


def test_readme_lists_exactly_the_declared_settings() -> None:
    table = settings_docs.readme_table(settings_docs.README.read_text(encoding="utf-8"))
    listed = re.findall(r"^\| `(FACECAT_[A-Z0-9_]+)` \|", table, flags=re.M)
    assert listed == [s.env for s in SETTINGS], FIX


def test_env_example_lists_exactly_the_declared_settings() -> None:
    text = settings_docs.ENV_EXAMPLE.read_text(encoding="utf-8")
    assert text == settings_docs.env_example(), FIX
    listed = re.findall(r"^# (FACECAT_[A-Z0-9_]+)=", text, flags=re.M)
    assert listed == [s.env for s in SETTINGS]


def test_readme_documents_every_endpoint() -> None:
    from catalog.openapi import PATHS

    readme = settings_docs.README.read_text(encoding="utf-8")
    for path in PATHS:
        stem = path.split("{")[0].rstrip("/") or path
        assert stem in readme, f"README does not mention {path}"

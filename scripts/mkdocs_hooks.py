"""mkdocs hook: the docstrings use Sphinx roles (:func:`x`), which mkdocstrings leaves as text; show them as
plain code, so the API reference reads ``x`` instead of ``:func:x``."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, **kwargs) -> str:
    return ROLE.sub("", html)

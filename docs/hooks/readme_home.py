"""The site's home page is the README, read at build time, so the front door has one source.

The README links into the site as ``docs/<page>``; on the site those pages are relative to the home page.
"""
from __future__ import annotations

import re
from pathlib import Path

HOME = "index.md"


def on_page_read_source(page, config):
    if page.file.src_uri != HOME:
        return None
    readme = Path(config.config_file_path).parent / "README.md"
    return re.sub(r"\]\(docs/", "](", readme.read_text(encoding="utf-8"))

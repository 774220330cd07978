"""/docs: the API described offline, from the app's own OpenAPI document.

FastAPI's default /docs loads Swagger UI from a CDN, which an offline device cannot reach, and no
local copy of its assets installs here; this page lists every endpoint from /openapi.json instead.
"""

from __future__ import annotations

import html
from typing import Any


def docs_page(openapi: dict[str, Any]) -> str:
    rows = []
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            summary = operation.get("summary", "")
            text = operation.get("description", "").strip().split("\n\n")[0]
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td><b>{html.escape(summary)}</b> {html.escape(text)}</td></tr>"
            )
    title = html.escape(openapi.get("info", {}).get("title", "API"))
    version = html.escape(str(openapi.get("info", {}).get("version", "")))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} — API</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}td{{padding:.3rem .8rem;vertical-align:top}}
tr:nth-child(even){{background:#f4f4f4}}code{{font-size:.95em}}</style></head>
<body><h1>{title} <small>{version}</small></h1>
<p>Every error is <code>{{"error": {{"status", "message", "hint"}}}}</code>. The machine-readable
description: <a href="openapi.json">/openapi.json</a>.</p>
<table>{"".join(rows)}</table></body></html>
"""

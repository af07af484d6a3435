"""``results.html``: a search's ranked lists as one self-contained page.

Every image is a thumbnail embedded as a ``data:`` URI, the style sheet is inline, and the page
has no script and loads nothing: it opens from disk in any browser, with no server. Every text
taken from the search (file names, paths) is HTML-escaped, so a file named
``<img src=x onerror=alert(1)>.jpg`` shows as that text.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from typing import Any

from PIL import Image

from reid_attn.data.datasets import DatasetError
from reid_attn.data.image_dataset import read_image

STYLE = """
body { font-family: sans-serif; margin: 16px; background: #fff; color: #111; }
h1 { font-size: 20px; } .meta { color: #444; font-size: 13px; margin-bottom: 12px; }
.query { display: flex; align-items: flex-start; gap: 8px; margin: 14px 0;
         padding-top: 10px; border-top: 1px solid #ccc; }
.card { width: {card_width}px; font-size: 11px; text-align: center; word-wrap: break-word; }
.card img { display: block; margin: 0 auto 3px; border: 3px solid #bbb;
            width: {thumb_width}px; height: {thumb_height}px; object-fit: contain; }
.card.q img { border-color: #285ade; } .card.same img { border-color: #00aa00; }
.name { font-family: monospace; } .none { color: #888; font-size: 13px; }
"""


def thumbnail_data_uri(path: str, height: int, width: int, quality: int = 85) -> str:
    """The image at ``path``, upright (its EXIF orientation applied) and fitted into
    ``height x width`` pixels (aspect kept), as a JPEG ``data:`` URI; ``""`` when it cannot be
    read."""
    try:
        image = read_image(path, upright=True)
    except DatasetError:
        return ""
    image.thumbnail((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def identity_text(pid: int, camid: int) -> str:
    """``"id 2 · cam 1"`` from a name's identity and 0-based camera; parts unknown (-1) left
    out."""
    parts = ([f"id {pid}"] if pid >= 0 else []) + ([f"cam {camid + 1}"] if camid >= 0 else [])
    return " · ".join(parts)


def _card(uri: str, lines: list[str], css: str) -> str:
    image = (
        f'<img src="{html.escape(uri)}" alt="">' if uri else '<div class="none">(unreadable)</div>'
    )
    text = "<br>".join(lines)
    return f'<div class="card {css}">{image}{text}</div>'


def render_results_page(
    record: dict[str, Any],
    thumbnail: Callable[[str], str],
    max_queries: int,
    thumbnail_height: int,
    thumbnail_width: int,
    distance_text: Callable[[float], str],
) -> str:
    """The HTML page of a search record (the content of ``results.json``: ``queries``, each
    with ``path``, ``name``, ``pid``, ``camid`` and ``results`` of ``rank``, ``path``,
    ``name``, ``distance``, ``pid``, ``camid``; and the header fields ``checkpoint``,
    ``gallery``, ``gallery_size``, ``distance``, ``search``, ``topk``). ``thumbnail(path)``
    gives an image's ``data:`` URI; the first ``max_queries`` queries are shown."""
    esc = html.escape
    shown = record["queries"][:max_queries]
    recall = record.get("recall_at_topk")
    header = [
        f"checkpoint <span class=name>{esc(str(record['checkpoint']))}</span>",
        f"gallery <span class=name>{esc(str(record['gallery']))}</span> "
        f"({record['gallery_size']} images)",
        f"{esc(record['distance'])} distance, {esc(record['search'])} search"
        + (f" (recall@{record['topk']} {recall:.3f} on a sample)" if recall is not None else ""),
        f"top {record['topk']}"
        + (", same-camera images excluded" if record.get("exclude_same_camera") else ""),
    ]
    if len(shown) < len(record["queries"]):
        header.append(
            f"first {len(shown)} of {len(record['queries'])} queries shown (all in results.json)"
        )
    body = []
    for query in shown:
        cards = [
            _card(
                thumbnail(query["path"]),
                [
                    "query",
                    f"<span class=name>{esc(query['name'])}</span>",
                    esc(identity_text(query["pid"], query["camid"])),
                ],
                "q",
            )
        ]
        for hit in query["results"]:
            same = query["pid"] >= 0 and hit["pid"] == query["pid"]
            cards.append(
                _card(
                    thumbnail(hit["path"]),
                    [
                        f"#{hit['rank']} d={esc(distance_text(hit['distance']))}",
                        f"<span class=name>{esc(hit['name'])}</span>",
                        esc(identity_text(hit["pid"], hit["camid"])),
                    ],
                    "same" if same else "",
                )
            )
        if not query["results"]:
            cards.append('<div class="none">no gallery image left</div>')
        body.append(f'<div class="query">{"".join(cards)}</div>')
    style = (
        STYLE.replace("{card_width}", str(max(thumbnail_width + 16, 90)))
        .replace("{thumb_width}", str(thumbnail_width))
        .replace("{thumb_height}", str(thumbnail_height))
    )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        "<title>reid-attn search results</title>"
        f"<style>{style}</style></head><body><h1>reid-attn search results</h1>"
        f'<div class="meta">{"<br>".join(header)}</div>' + "\n".join(body) + "</body></html>\n"
    )

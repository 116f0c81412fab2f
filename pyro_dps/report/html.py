"""The report's HTML building blocks: escaping and number formatting, table cells and tables, figures, PNG
encoding (Pillow) and data URIs, and the bounds that keep a page small whatever N_t (examples per gallery,
group levels per table, characters per cell or text)."""
from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import numpy as np

N_SHOW = 12  # examples shown per gallery
MAX_LEVELS = 50  # group levels shown per grouping in the table (the largest ones)
MAX_CELL = 200  # characters of one table cell
MAX_TEXT = 300  # characters of a text example
MAX_FLAGGED = 60  # flagged examples listed (the lowest weights), with thumbnails and suggested labels


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG file of an (H, W) grayscale or (H, W, 3) RGB uint8 image (Pillow, matplotlib's own dependency)."""
    from PIL import Image

    image = np.ascontiguousarray(image, dtype=np.uint8)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be (H, W) or (H, W, 3), got {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _data_uri(payload: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(payload).decode("ascii")


def _figure_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return _data_uri(buf.getvalue())


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "&ndash;"
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.3e}"
    if isinstance(value, (dict, list)):
        return _esc(json.dumps(value))
    return _esc(value)


def _badge(status: str) -> str:
    return f'<span class="badge {status}">{status.upper()}</span>'


def _td(cell) -> str:
    """A table cell: HTML text, or (HTML text, sort value) for a cell the sort script orders by a number."""
    if isinstance(cell, tuple):
        text, value = cell
        value = "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.6g}"
        return f'<td class="num" data-v="{value}">{text}</td>'
    return f"<td>{cell}</td>"


def _table(headers: list[str], rows: list[list], cls: str = "", table_id: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f'<table class="{cls}"{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def filter_box(table_id: str, placeholder: str = "filter rows") -> str:
    """A text box that hides the rows of table `table_id` not containing its text (the page's sort script)."""
    return f'<input class="filter" type="search" data-table="{table_id}" placeholder="{_esc(placeholder)}">'


def _figure(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{_esc(alt)}">{cap}</figure>'


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _cell(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "\u2026"

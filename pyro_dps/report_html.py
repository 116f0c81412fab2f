"""The report's HTML building blocks, shared by `report` and `report_sections`: escaping and number
formatting, tables and figures, PNG encoding (Pillow) and data URIs, and the two records the sections read
(`_Examples`: what the run stored per example; `_Plan`: the selection the page shows)."""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

N_SHOW = 12  # examples shown per gallery
MAX_LEVELS = 50  # group levels shown per grouping in the table (the largest ones)
MAX_CELL = 200  # characters of one table cell
MAX_TEXT = 300  # characters of a text example
MAX_FLAGGED = 60  # flagged examples listed (the lowest weights), with thumbnails and suggested labels
THUMB_SIDE = 64  # thumbnails are at most this many pixels a side


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


def _as_image(x: np.ndarray) -> np.ndarray | None:
    """One example's features as a displayable uint8 image, or None when they are not an image."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        side = int(round(np.sqrt(x.size)))
        if side * side != x.size or side < 4:
            return None
        x = x.reshape(side, side)
    elif x.ndim == 3 and x.shape[0] in (1, 3):
        x = x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)
    elif x.ndim == 3 and x.shape[-1] in (1, 3):
        x = x[..., 0] if x.shape[-1] == 1 else x
    elif x.ndim != 2:
        return None
    lo, hi = float(np.min(x)), float(np.max(x))
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    image = np.round(x * 255).astype(np.uint8)
    if max(image.shape[:2]) > THUMB_SIDE:  # a thumbnail: the page shows 72 px cards
        from PIL import Image

        thumb = Image.fromarray(image)
        thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
        image = np.asarray(thumb, dtype=np.uint8)
    return image


@dataclass
class _Examples:
    """What the galleries show per example position: thumbnails or texts, and the true label when known."""

    images: dict = field(default_factory=dict)
    texts: dict = field(default_factory=dict)
    true_labels: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # position -> the model's input row (for suggested labels)
    note: str = ""

    def image_uri(self, pos: int) -> str | None:
        """A thumbnail of training example `pos` (encoded on demand), or None."""
        img = self.images.get(pos)
        return None if img is None else _data_uri(png_bytes(img))


def gallery_positions(plan: "_Plan") -> np.ndarray:
    """Positions (into the example axis) of every example a gallery shows, from the selection plan."""
    return np.unique(np.concatenate([plan.order[:N_SHOW], plan.order[::-1][:N_SHOW], plan.unsure_order[:N_SHOW],
                                     flagged_order(plan)[:MAX_FLAGGED]]))


def flagged_order(plan: "_Plan") -> np.ndarray:
    """Positions the report's selection (top-beta) drops, lowest posterior mean weight first."""
    return plan.order[::-1][:len(plan.order) - plan.k]


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


@dataclass
class _Plan:
    """The selection the report shows, a pure function of the draws and the run's beta."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    beta: float
    beta_note: str
    k: int
    keep_top: np.ndarray
    keep_prob: np.ndarray
    unsure: np.ndarray
    order: np.ndarray  # positions by decreasing posterior mean
    unsure_order: np.ndarray  # uncertain positions, widest interval first
    cut: float
    tau: float = 0.5
    q: float = 0.9


def _cell(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "\u2026"

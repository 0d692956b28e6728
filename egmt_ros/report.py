"""Reusable report helpers: tables (Markdown / HTML / CSV) with best-per-column marking, contact sheets,
plain HTML pages, and a headless-Chromium renderer (screenshot + error check).

Used by ``egmt_ros.cli.bench`` and the rosbag evaluator. No ROS, no network: Chromium runs on ``file://`` URLs.
"""

from __future__ import annotations

import csv
import html
import math
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import unquote

import cv2
import numpy as np

# --------------------------------------------------------------------------- tables


@dataclass
class Column:
    """One table column: ``row[key]`` holds the value (a mean, when ``std_key`` names the spread)."""

    key: str
    title: str
    #: True / False: rank the column and mark the best cell; None: not ranked.
    higher_is_better: bool | None = None
    std_key: str | None = None
    unit: str = ""

    def header(self) -> str:
        """Title with unit and the ranking arrow (up: higher is better, down: lower is better)."""
        t = self.title + (f" ({self.unit})" if self.unit else "")
        if self.higher_is_better is True:
            t += " ↑"
        elif self.higher_is_better is False:
            t += " ↓"
        return t


def fmt_number(v: object) -> str:
    """Compact human formatting: ints with thousands separators, floats with 3-4 significant digits."""
    if v is None or v == "":
        return "-"
    if isinstance(v, (bool, str)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    x = float(v)  # type: ignore[arg-type]
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.1f}"
    if a >= 10:
        return f"{x:.2f}"
    if a >= 1:
        return f"{x:.3f}"
    if a >= 0.01:
        return f"{x:.4f}"
    return f"{x:.3g}"


def _as_float(v: object) -> float | None:
    if v is None or isinstance(v, (str, bool)):
        return None
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def best_rows(values: Sequence[object], higher_is_better: bool, rel_tol: float = 1e-9) -> set[int]:
    """Indices of the best value(s) (ties all count); missing / NaN / non-numeric values never win."""
    nums = [(i, x) for i, x in enumerate(map(_as_float, values)) if x is not None]
    if not nums:
        return set()
    best = max(x for _, x in nums) if higher_is_better else min(x for _, x in nums)
    tol = rel_tol * max(1.0, abs(best))
    return {i for i, x in nums if abs(x - best) <= tol}


def _cells(rows: Sequence[dict], columns: Sequence[Column]) -> list[list[tuple[str, bool]]]:
    """``[[(text, is_best), ...] per row]``: mean ± std text and whether the cell is the column's best."""
    best = {c.key: best_rows([r.get(c.key) for r in rows], c.higher_is_better)
            for c in columns if c.higher_is_better is not None}
    out = []
    for i, r in enumerate(rows):
        line = []
        for c in columns:
            text = fmt_number(r.get(c.key))
            if c.std_key is not None and _as_float(r.get(c.std_key)) is not None:
                text += " ± " + fmt_number(r.get(c.std_key))
            line.append((text, i in best.get(c.key, set())))
        out.append(line)
    return out


def direction_note(columns: Sequence[Column]) -> str:
    """One sentence: which columns are ranked higher-is-better and which lower-is-better."""
    hi = [c.title for c in columns if c.higher_is_better is True]
    lo = [c.title for c in columns if c.higher_is_better is False]
    parts = []
    if hi:
        parts.append("higher is better (↑): " + ", ".join(hi))
    if lo:
        parts.append("lower is better (↓): " + ", ".join(lo))
    if not parts:
        return ""
    return "Best per column in bold; " + "; ".join(parts) + "."


def markdown_table(rows: Sequence[dict], columns: Sequence[Column], note: bool = True) -> str:
    """GitHub-flavoured Markdown table; the best cell of each ranked column is **bold**; a direction note follows."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c.header()) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for line in _cells(rows, columns):
        lines.append("| " + " | ".join(f"**{esc(t)}**" if b else esc(t) for t, b in line) + " |")
    text = "\n".join(lines) + "\n"
    if note and direction_note(columns):
        text += "\n" + direction_note(columns) + "\n"
    return text


def html_table(rows: Sequence[dict], columns: Sequence[Column], note: bool = True) -> str:
    """The same table as HTML (best cells in ``<b class="best">``), followed by the direction note."""
    head = "".join(f"<th>{html.escape(c.header())}</th>" for c in columns)
    body = []
    for line in _cells(rows, columns):
        tds = "".join(f'<td><b class="best">{html.escape(t)}</b></td>' if b else f"<td>{html.escape(t)}</td>"
                      for t, b in line)
        body.append(f"<tr>{tds}</tr>")
    text = (f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody>\n</table></div>\n")
    if note and direction_note(columns):
        text += f'<p class="note">{html.escape(direction_note(columns))}</p>\n'
    return text


def write_csv(path: str | Path, rows: Iterable[dict], fieldnames: Sequence[str]) -> Path:
    """Write ``rows`` (dicts) as CSV with exactly ``fieldnames`` (missing values empty, floats at full precision)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fieldnames), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fieldnames})
    return p


# --------------------------------------------------------------------------- contact sheets

SHEET_HEADER_H = 28  #: height of the column-title band of a contact sheet (pixels)
SHEET_LABEL_H = 22  #: height of the row-title band above each row of tiles (pixels)
_BG = (24, 24, 24)
_FG = (240, 240, 240)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _to_rgb_u8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] or uint8, grey or RGB -> uint8 RGB."""
    a = img if img.dtype == np.uint8 else np.clip(np.rint(img.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def _put_text(canvas: np.ndarray, text: str, x: int, y: int, max_w: int, band_h: int) -> None:
    """Draw ASCII ``text`` left-aligned in a band of height ``band_h`` starting at (x, y), shrinking or
    truncating it to fit ``max_w`` pixels."""
    text = text.encode("ascii", "replace").decode("ascii")
    scale = 0.5
    while True:
        (tw, th), _ = cv2.getTextSize(text, _FONT, scale, 1)
        if tw <= max_w - 6 or (scale <= 0.35 and len(text) <= 2):
            break
        if scale > 0.35:
            scale -= 0.05
        else:
            text = text[:-2] + "~"
    cv2.putText(canvas, text, (x + 3, y + (band_h + th) // 2), _FONT, scale, _FG, 1, cv2.LINE_AA)


def contact_sheet(grid: Sequence[Sequence[np.ndarray | None]], col_titles: Sequence[str],
                  row_titles: Sequence[str], tile: tuple[int, int] = (200, 150)) -> np.ndarray:
    """A labelled image grid as uint8 RGB.

    ``grid[r][c]`` is a grey or RGB image (float [0, 1] or uint8) or None (drawn as an "n/a" tile). Every image is
    fitted into a ``tile = (width, height)`` cell keeping its aspect ratio. Layout: a title band of
    ``SHEET_HEADER_H`` pixels with the column titles, then per row a band of ``SHEET_LABEL_H`` pixels with the row
    title and a row of tiles, so the sheet is ``len(col_titles) * tile[0]`` wide and
    ``SHEET_HEADER_H + len(grid) * (SHEET_LABEL_H + tile[1])`` high.
    """
    tw, th = tile
    n_cols = len(col_titles)
    if len(row_titles) != len(grid) or any(len(r) != n_cols for r in grid):
        raise ValueError("contact_sheet: grid shape must match the row and column titles")
    canvas = np.full((SHEET_HEADER_H + len(grid) * (SHEET_LABEL_H + th), n_cols * tw, 3), _BG, np.uint8)
    for c, title in enumerate(col_titles):
        _put_text(canvas, title, c * tw, 0, tw, SHEET_HEADER_H)
    for r, (row, title) in enumerate(zip(grid, row_titles)):
        y0 = SHEET_HEADER_H + r * (SHEET_LABEL_H + th)
        _put_text(canvas, title, 0, y0, n_cols * tw, SHEET_LABEL_H)
        y0 += SHEET_LABEL_H
        for c, img in enumerate(row):
            x0 = c * tw
            if img is None:
                canvas[y0:y0 + th, x0:x0 + tw] = (60, 60, 60)
                _put_text(canvas, "n/a", x0, y0, tw, th)
                continue
            a = _to_rgb_u8(img)
            s = min(tw / a.shape[1], th / a.shape[0])
            w, h = max(1, round(a.shape[1] * s)), max(1, round(a.shape[0] * s))
            a = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            ox, oy = x0 + (tw - w) // 2, y0 + (th - h) // 2
            canvas[oy:oy + h, ox:ox + w] = a
    return canvas


def save_png(path: str | Path, rgb: np.ndarray, max_bytes: int | None = None) -> Path:
    """Write an RGB uint8 image as PNG (max compression); with ``max_bytes``, downscale until the file fits."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img = cv2.cvtColor(_to_rgb_u8(rgb), cv2.COLOR_RGB2BGR)
    while True:
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise OSError(f"cannot encode PNG for {p}")
        if max_bytes is None or buf.size <= max_bytes or min(img.shape[:2]) < 32:
            break
        s = max(0.5, min(0.95, math.sqrt(max_bytes / buf.size) * 0.97))
        img = cv2.resize(img, (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    p.write_bytes(buf.tobytes())
    return p


# --------------------------------------------------------------------------- HTML pages

PAGE_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px; color: #222;
       background: #fafafa; }
h1 { font-size: 24px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ccc; }
div.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; background: #fff; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
b.best { color: #0a5; }
p.note { font-size: 12px; color: #555; }
img.sheet { max-width: 100%; border: 1px solid #999; display: block; margin: 8px 0; }
pre { background: #eee; padding: 8px; font-size: 12px; white-space: pre-wrap; }
"""


def html_page(title: str, body: str, css: str = PAGE_CSS) -> str:
    """A complete, self-contained HTML document (inline CSS, no scripts) around ``body``."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n")


# --------------------------------------------------------------------------- headless Chromium

_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--hide-scrollbars")


def find_chromium() -> str:
    """Path of a Chromium/Chrome executable (``$CHROMIUM`` first); RuntimeError with the install hint if none."""
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return str(shutil.which(env))
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("headless Chromium not found (looked for $CHROMIUM, " + ", ".join(_CHROMIUM_NAMES)
                       + "); install it with `apt-get install -y chromium`")


def _run_chromium(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    with tempfile.TemporaryDirectory(prefix="egmt_chromium_") as profile:
        cmd = [exe, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def screenshot_html(html_path: str | Path, png_path: str | Path, width: int = 1280, height: int = 1600,
                    timeout: float = 120.0) -> Path:
    """Render a local HTML file in headless Chromium and save a ``width x height`` screenshot as PNG.

    Raises RuntimeError if Chromium is missing or produced no screenshot (with the tail of its stderr).
    """
    src = Path(html_path).resolve()
    out = Path(png_path).resolve()
    if not src.is_file():
        raise FileNotFoundError(f"no HTML file {src}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    res = _run_chromium([f"--screenshot={out}", f"--window-size={width},{height}", src.as_uri()], timeout)
    if res.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium screenshot of {src} failed (exit {res.returncode}): {res.stderr[-2000:]}")
    return out


def rendered_text(html_path: str | Path, timeout: float = 120.0) -> str:
    """The text of a local HTML page as headless Chromium renders it: its DOM after loading, tags, scripts and
    styles removed, whitespace collapsed (what a reader sees, for tests that assert on a page's content)."""
    res = _run_chromium(["--dump-dom", Path(html_path).resolve().as_uri()], timeout)
    if res.returncode != 0 or "<body" not in res.stdout:
        raise RuntimeError(f"chromium could not load {html_path} (exit {res.returncode}): {res.stderr[-2000:]}")
    body = re.sub(r"<(script|style|title)\b[^>]*>.*?</\1>", " ", res.stdout, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


_CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = document.images;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { console.log('BROKEN_IMAGE ' + imgs[i].getAttribute('src')); }
  }
  console.log('EGMT_RENDER_CHECK_DONE ' + imgs.length);
});
</script>"""
_PROBLEM_RE = re.compile(r"Uncaught|Failed to load resource|BROKEN_IMAGE")


def html_problems(html_path: str | Path, timeout: float = 120.0) -> list[str]:
    """Load a local HTML page in headless Chromium and list what went wrong (empty list: it rendered cleanly).

    Reports console lines with 'Uncaught' or 'Failed to load resource', every ``<img>`` that did not decode
    (checked in the page after its load event by a probe script added to a temporary sibling copy), and
    local ``src``/``href`` files that do not exist.
    """
    src = Path(html_path).resolve()
    text = src.read_text(encoding="utf-8")
    problems = []
    for ref in re.findall(r"""(?:src|href)\s*=\s*["']([^"'#?]+)""", text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", ref, re.I):  # http:, data:, mailto: ... not local files
            continue
        if not (src.parent / unquote(html.unescape(ref))).exists():
            problems.append(f"missing file referenced by the page: {ref}")
    probe = src.parent / f".render_check_{uuid.uuid4().hex}.html"
    probe.write_text(text.replace("</body>", _CHECK_SCRIPT + "\n</body>") if "</body>" in text
                     else text + _CHECK_SCRIPT, encoding="utf-8")
    try:
        res = _run_chromium(["--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()], timeout)
    finally:
        probe.unlink(missing_ok=True)
    log = res.stderr.splitlines()
    if res.returncode != 0:
        problems.append(f"chromium exited with {res.returncode}")
    if not any("EGMT_RENDER_CHECK_DONE" in line for line in log):
        problems.append("the page's load event never ran (no probe output from chromium)")
    problems += [line.strip() for line in log if _PROBLEM_RE.search(line)]
    return problems

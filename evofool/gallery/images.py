"""Gallery images: native PNG copies, nearest-neighbour enlargements and paged contact sheets."""

from __future__ import annotations

import importlib.util
import io
import math
import os
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from evofool.errors import EvofoolError
from evofool.gallery.rundata import Champion

TARGET_SIZE = 224      # enlarged copies are at least this many pixels on their long side
# Largest long side of an enlargement: more is no use on a page, and a 4096² RGB image is
# already 48 MiB in memory (``--scale 100000`` would ask for terabytes).
MAX_ENLARGED_SIDE = 4096
TILE_SIZE = 140        # image area of a contact-sheet tile
PER_PAGE = 100         # most tiles on one contact-sheet page
MAX_COLUMNS = 10

BACKGROUND = (22, 24, 29)
TILE_BACKGROUND = (34, 37, 44)
TEXT = (222, 226, 232)
MUTED = (150, 156, 166)
ACTIVATION_COLOR = (127, 176, 255)


def default_scale(height: int, width: int, target: int = TARGET_SIZE) -> int:
    """Integer enlargement that brings the long side to at least ``target`` (1: none needed)."""
    side = max(height, width)
    return 1 if side >= target else math.ceil(target / side)


def enlarged_name(name: str, scale: int) -> str:
    """``0003-three.png`` → ``0003-three-x8.png``."""
    stem, ext = os.path.splitext(name)
    return f"{stem}-x{scale}{ext}"


def check_scale(scale: int, height: int, width: int) -> None:
    """Refuses an enlargement factor below 1 or one whose long side would pass ``MAX_ENLARGED_SIDE``.

    Raises:
        EvofoolError: naming the size it would make and the largest factor allowed.
    """
    side = max(height, width)
    if scale < 1:
        raise EvofoolError(f"--scale must be at least 1 (got {scale})")
    if scale > 1 and side * scale > MAX_ENLARGED_SIDE:
        raise EvofoolError(f"--scale {scale} would make {side * scale:,} px wide images ({side} px × {scale}); "
                           f"the most is {MAX_ENLARGED_SIDE} px: use --scale {max(1, MAX_ENLARGED_SIDE // side)} "
                           f"or less")


def decode_png(data: bytes, path: Path) -> Image.Image:
    """A PNG's bytes (read from ``path``) decoded.

    Raises:
        EvofoolError: not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise EvofoolError(f"{path} is not a readable image ({exc.__class__.__name__})") from None


def enlarge(image: Image.Image, scale: int) -> Image.Image:
    """Nearest-neighbour enlargement, so every source pixel becomes a crisp ``scale×scale`` block."""
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def format_confidence(p: float) -> str:
    """``99.99 %``-style text with enough digits to tell near-certain values apart."""
    if p >= 1.0:
        return "100 %"
    if p >= 0.9999:
        text = f"{p * 100:.4f}"
        return ">99.9999 %" if text == "100.0000" else f"{text} %"
    return f"{p * 100:.2f} %"


def confidence_color(p: float) -> tuple[int, int, int]:
    """Green at ≥ 99.99 %, lime at ≥ 99 %, amber at ≥ 50 %, else coral."""
    if p >= 0.9999:
        return (94, 224, 138)
    if p >= 0.99:
        return (181, 224, 94)
    if p >= 0.5:
        return (224, 192, 94)
    return (224, 122, 94)


def format_activation(a: float) -> str:
    """A unit's activation as a plain number (``12.35``, ``-0.0713``): no percent, no probability."""
    return f"{a:.4g}"


# The value helpers take a ``rundata.Champion`` or an ``html.Row``: anything with the
# champion's ``fitness`` and ``confidence`` (``None`` for a unit run's activation).
def value_text(champion: Champion) -> str:
    """A champion's value as a table shows it: ``99.99 %``, or a unit's activation."""
    if champion.confidence is None:
        return format_activation(champion.fitness)
    return format_confidence(champion.confidence)


def value_caption(champion: Champion) -> str:
    """A champion's value under its tile: ``99.99 %``, or ``activation 12.35``."""
    if champion.confidence is None:
        return f"activation {format_activation(champion.fitness)}"
    return format_confidence(champion.confidence)


def value_color(champion: Champion) -> tuple[int, int, int]:
    """``confidence_color``, or one neutral colour for activations (no level means "fooled")."""
    return ACTIVATION_COLOR if champion.confidence is None else confidence_color(champion.confidence)


def _dejavu() -> str | None:
    """matplotlib's DejaVu Sans (wide Unicode coverage), found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(path) if path.is_file() else None


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans at ``size`` px, else Pillow's bundled font (bitmap without FreeType)."""
    path = _dejavu()
    try:
        if path:
            return ImageFont.truetype(path, size)
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def one_line(text: str) -> str:
    """``text`` with control characters (a newline in a class name) as spaces: Pillow's layout
    of one line fails on them ("raqm_layout() failed")."""
    return "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)


def fit_text(text: str, fnt, width: int) -> str:
    """``text`` on one line, cut with an ellipsis so that it fits in ``width`` pixels."""
    text = one_line(text)
    if fnt.getlength(text) <= width:
        return text
    lo, hi = 0, len(text)  # longest prefix that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fnt.getlength(text[:mid].rstrip() + "…") <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"


def tile_image(image: Image.Image, size: int = TILE_SIZE) -> Image.Image:
    """A champion shown at about ``size`` px: integer nearest-neighbour zoom, or a downscale."""
    image = image.convert("RGB")
    side = max(image.size)
    if side <= size:
        return enlarge(image, max(1, size // side))
    factor = size / side
    return image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))),
                        Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class SheetLayout:
    """Geometry of a contact-sheet page."""

    columns: int
    rows: int
    tile_w: int
    tile_h: int
    image_h: int
    pad: int = 12
    header: int = 58

    @property
    def size(self) -> tuple[int, int]:
        return (self.pad + self.columns * (self.tile_w + self.pad),
                self.header + self.pad + self.rows * (self.tile_h + self.pad))


def paginate(n: int, per_page: int = PER_PAGE) -> list[range]:
    """Balanced pages of at most ``per_page`` items (150 → 75 + 75)."""
    pages = max(1, math.ceil(n / per_page))
    size = math.ceil(n / pages) if n else 0
    return [range(i, min(n, i + size)) for i in range(0, n, size)] if n else [range(0)]


def layout(count: int, image_w: int, image_h: int) -> SheetLayout:
    """A roughly 16:10 grid of ``count`` tiles, at most ``MAX_COLUMNS`` wide."""
    tile_w = max(image_w, 120)
    tile_h = image_h + 46
    columns = math.ceil(math.sqrt(1.6 * count * (tile_h + 12) / (tile_w + 12)))
    columns = max(1, min(columns, count, MAX_COLUMNS))
    return SheetLayout(columns=columns, rows=math.ceil(count / columns), tile_w=tile_w, tile_h=tile_h,
                       image_h=image_h)


def render_sheet(champions: list[Champion], images: list[Image.Image], title: str,
                 subtitle: str = "") -> Image.Image:
    """One contact-sheet page: a grid of tiles, class and confidence (or activation) under each.

    Args:
        champions: The classes on this page, in order.
        images: Their tile images (see ``tile_image``), all the same size.
        title: Header line.
        subtitle: Second, smaller header line.
    """
    image_w = max(im.width for im in images)
    image_h = max(im.height for im in images)
    geo = layout(len(champions), image_w, image_h)
    sheet = Image.new("RGB", geo.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    width = geo.size[0] - 2 * geo.pad
    draw.text((geo.pad, 10), fit_text(title, font(18), width), font=font(18), fill=TEXT)
    draw.text((geo.pad, 34), fit_text(subtitle, font(13), width), font=font(13), fill=MUTED)
    label, small = font(15), font(14)
    for i, (champion, image) in enumerate(zip(champions, images)):
        row, col = divmod(i, geo.columns)
        x = geo.pad + col * (geo.tile_w + geo.pad)
        y = geo.header + geo.pad + row * (geo.tile_h + geo.pad)
        draw.rectangle((x - 4, y - 4, x + geo.tile_w + 3, y + geo.tile_h + 1), fill=TILE_BACKGROUND)
        sheet.paste(image, (x + (geo.tile_w - image.width) // 2, y + (geo.image_h - image.height) // 2))
        ty = y + geo.image_h + 5
        index = "" if champion.name == str(champion.index) else f"{champion.index} "
        draw.text((x, ty), index, font=label, fill=MUTED)
        name_x = x + int(label.getlength(index))
        draw.text((name_x, ty), fit_text(champion.name, label, geo.tile_w - (name_x - x)), font=label, fill=TEXT)
        draw.text((x, ty + 19), value_caption(champion), font=small, fill=value_color(champion))
    return sheet


def sheet_name(page: int) -> str:
    """``contact-sheet-01.png`` (1-based page number)."""
    return f"contact-sheet-{page:02d}.png"

"""Reading and writing image files as uint8 ``C×H×W`` tensors (C = 1 greyscale, 3 RGB)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from evofool import safefs
from evofool.errors import EvofoolError

# A 1,000-megapixel PNG is ~1 GB; photos and champions are far below (Pillow's own
# decompression-bomb guard then bounds the decoded size).
IMAGE_FILE_LIMIT = 1 << 30

_MODES = {1: "L", 3: "RGB"}


def _mode(channels: int) -> str:
    if channels not in _MODES:
        raise EvofoolError(f"images must have 1 (greyscale) or 3 (RGB) channels, not {channels}")
    return _MODES[channels]


def resize_and_crop(img: Image.Image, height: int, width: int) -> Image.Image:
    """Photo-model resizing: shorter side to ``size·256/224``, then a centre crop ``height×width``.

    This is the usual ImageNet evaluation transform (resize 256, crop 224).
    """
    target = round(max(height, width) * 256 / 224)
    w, h = img.size
    scale = target / min(w, h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return img.crop((left, top, left + width, top + height))


def load_image(path: str | Path, shape: tuple[int, int, int], resize: bool = False,
               model: str | None = None, fit: str = "whole", data: bytes | None = None) -> torch.Tensor:
    """Reads an image file as a uint8 ``C×H×W`` tensor of the given shape.

    Args:
        path: Any format Pillow reads (PNG, JPEG, ...).
        shape: ``(C, H, W)`` wanted; the image is converted to greyscale (C=1) or RGB (C=3).
        resize: If true, an image of another size is resized (see ``fit``); if false,
            another size is an error.
        model: Model spec named in the size-mismatch error message.
        fit: ``whole`` — the whole picture resized to H×W (what a person sees; the
            default, since a photo's subject is often off-centre), or ``crop`` — the
            ImageNet evaluation transform (``resize_and_crop``).
        data: The file's bytes, already read (a run's champion as its ``champions.json``
            entry describes it, ``RunFolder.read_champion_files``); ``path`` then only names it.

    Raises:
        EvofoolError: Missing or unreadable file, or the wrong size when ``resize`` is false.
    """
    path = Path(path)
    channels, height, width = shape
    mode = _mode(channels)
    try:
        # A FIFO or a device would block or never end: read a bounded regular file only
        # (a link the user names is theirs to follow: only writes never follow links).
        if data is None:
            data = safefs.read_bounded(path.resolve(), IMAGE_FILE_LIMIT)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            # Palette/alpha/16-bit images all go through Pillow's own conversion.
            img = img.convert(mode)
    except FileNotFoundError:
        raise EvofoolError(f"{path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not an image file" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise EvofoolError(f"{path}: cannot read as an image ({reason})") from None
    if img.size != (width, height):
        if not resize:
            taker = f"model {model}" if model else "the model"
            raise EvofoolError(f"{path} is {img.size[0]}×{img.size[1]} but {taker} takes {width}×{height}")
        if fit == "crop":
            img = resize_and_crop(img, height, width)
        elif fit == "whole":
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        else:
            raise EvofoolError(f"unknown fit {fit!r}; choose whole or crop")
    array = np.array(img, dtype=np.uint8)  # a writable copy: torch warns on read-only arrays
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def to_pil(image: np.ndarray | torch.Tensor) -> Image.Image:
    """A uint8 ``C×H×W`` image (C = 1 or 3; an array, or a tensor on any device) as a PIL
    image (L or RGB): the one conversion every PNG evofool writes goes through.

    Raises:
        ValueError: not a uint8 image of shape 1×H×W or 3×H×W.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().to("cpu").numpy()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in _MODES:
        raise ValueError(f"a PNG needs a uint8 1×H×W or 3×H×W image, got {image.dtype} {tuple(image.shape)}")
    return Image.fromarray(np.ascontiguousarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)))


def save_png(image: np.ndarray | torch.Tensor, path: str | Path, *, root: str | Path | None = None) -> Path:
    """Writes a uint8 ``C×H×W`` image (``to_pil``) as a PNG.

    Pixels are stored exactly (PNG is lossless), so ``load_image`` of the result gives the
    same tensor back. The file is written as a new temp file renamed over ``path``
    (``safefs.save_png_atomic``): never through a link.

    Args:
        image: The image (an array, or a tensor on any device).
        path: The file.
        root: The folder (a run folder) below which no folder on the way may be a link;
            ``None``: the parent folder, created if needed.

    Returns:
        The path written.

    Raises:
        ValueError: ``image`` is not a uint8 image of shape 1×H×W or 3×H×W.
        EvofoolError: ``path`` (or its temp file, or a folder below ``root``) is a link or
            not a regular file.
    """
    picture = to_pil(image)
    path = Path(path)
    if root is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        safefs.make_dir(path.parent, root)
    return safefs.save_png_atomic(path, picture, root=root)

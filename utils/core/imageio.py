"""One way to open a picture, for every step that reads one (01's checks, 02's cache, 05's test set, 06, predict).

Pillow reads the header first, so the size limits are checked before a pixel is decoded; the decoder's warnings are
captured and truncated data is an error, never a silently grey half-picture; EXIF orientation is applied; any
depth and channel layout (16-bit, grey, palette, RGBA on white paper, CMYK) becomes 8-bit BGR for OpenCV; a link is
followed wherever it leads, a dangling one said plainly.
"""
from __future__ import annotations

import mimetypes
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Competition photos are about 1900x3460 (6.6 Mpx); 80 Mpx leaves room for any phone or scanner (and stays below
# the size at which Pillow starts warning of decompression bombs).
MAX_PIXELS = 80_000_000
_BOMB_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """A picture that cannot be used; the message says why, with the numbers."""


@dataclass
class Picture:
    image: np.ndarray | None        # BGR uint8 (None when only the header was read)
    width: int
    height: int
    warnings: list[str] = field(default_factory=list)


# picture formats this reader refuses by name, beyond those mimetypes knows: a file of one is a picture with an error,
# not a side file
OTHER_PICTURES = (".heic", ".heif", ".avif", ".jxl", ".jp2", ".dng", ".cr2", ".nef", ".arw", ".psd")


def is_picture_name(path) -> bool:
    """Whether a file's name says it is a picture, one this reader takes or not (a GIF, a HEIC); a folder's other
    files (JSON, CSV, WFDB records, notes) are side files."""
    suffix = Path(path).suffix.lower()
    kind = mimetypes.guess_type(f"x{suffix}")[0] or ""
    return suffix in IMAGE_EXTS or suffix in OTHER_PICTURES or kind.startswith("image/")


def _check_type(path: Path) -> None:
    if path.suffix.lower() not in IMAGE_EXTS:
        raise ImageReadError(f"not an image file type ({path.suffix or 'no extension'}); accepted: "
                             f"{', '.join(IMAGE_EXTS)}")
    if path.is_symlink() and not path.exists():
        raise ImageReadError(f"{path.name} is a link to {os.readlink(path)}, which does not exist (a dangling link)")
    if not path.is_file():
        raise ImageReadError(f"no such file: {path}" if not path.exists() else f"not a file: {path}")
    if path.stat().st_size == 0:
        raise ImageReadError("empty file (0 bytes)")


def _check_size(w: int, h: int, min_side: int, max_pixels: int) -> None:
    if max_pixels and w * h > max_pixels:
        raise ImageReadError(f"image too large: {w}x{h} ({w * h / 1e6:.1f} Mpx); the limit is "
                             f"{max_pixels / 1e6:.0f} Mpx")
    if min_side and min(w, h) < min_side:
        raise ImageReadError(f"image too small: {w}x{h} px; its shorter side must be at least {min_side} px "
                             f"(min_image_side)")


def to_bgr8(im: Image.Image) -> np.ndarray:
    """Any Pillow mode as 8-bit BGR: 16-bit scaled down, transparency composited on white paper."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        g = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(paper, rgba)
    rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def pillow_open(path: Path) -> Image.Image:
    """Pillow's own Image.open. Importing ultralytics replaces it (ultralytics/utils/patches.py) with one that, for a
    file Pillow cannot identify, tries to pip-install a HEIF plugin and, offline, fails with ModuleNotFoundError; the
    reader wants Pillow's answer and never an install. The patch keeps Pillow's function as `_image_open` in its
    module; where that changes, Image.open is used as it is."""
    opener = Image.open
    if getattr(opener, "__module__", "").startswith("ultralytics"):
        opener = getattr(opener, "__globals__", {}).get("_image_open", opener)
    return opener(path)


def _header_size(path: Path) -> tuple[int, int]:
    """Width and height from the header alone, for a picture Pillow refuses to open as a decompression bomb."""
    with _BOMB_LOCK:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with pillow_open(path) as im:
                return im.size
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _open(path: Path, min_side: int, max_pixels: int) -> Image.Image:
    try:
        im = pillow_open(path)
    except Image.DecompressionBombError:
        _check_size(*_header_size(path), min_side, max_pixels)
        raise
    _check_size(*im.size, min_side, max_pixels)
    return im


def read_image(path, min_side: int = 0, max_pixels: int = MAX_PIXELS, decode: bool = True) -> Picture:
    """The picture as BGR uint8 (or only its size with decode=False); ImageReadError names what is wrong. A link is
    followed wherever it leads."""
    path = Path(path)
    _check_type(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with _open(path, min_side, max_pixels) as im:
                if not decode:
                    im.verify()
                    return Picture(None, im.size[0], im.size[1], [str(w.message) for w in caught])
                im.load()
                pages = getattr(im, "n_frames", 1)
                bgr = to_bgr8(ImageOps.exif_transpose(im))
        notes = [str(w.message) for w in caught]
        if pages > 1:
            notes.append(f"{pages} pages ({im.format}): the first is read, the other {pages - 1} ignored")
        return Picture(bgr, bgr.shape[1], bgr.shape[0], notes)
    except UnidentifiedImageError:
        raise ImageReadError("cannot decode: not an image, or an unknown format (corrupt or text with an image "
                             "extension)") from None
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # truncated or corrupt data
        raise ImageReadError(f"truncated or corrupt image data ({type(exc).__name__}: {exc})") from None


def walk_pictures(folder: Path) -> tuple[list[Path], list[str]]:
    """Every picture under a folder, links to files and folders followed wherever they lead (a folder of links to a
    dataset is common), in a stable order; and what was skipped, each with why: side files (is_picture_name) and
    links that lead back into a folder already walked (a loop, or the same folder linked twice). Hidden files and
    folders are left out; a dangling link named like a picture stays in, for its reading to say so."""
    pictures, side, skipped, seen = [], [], [], {}
    for where, dirs, files in os.walk(folder, followlinks=True):
        info = os.stat(where)
        key = (info.st_dev, info.st_ino)
        if key in seen:
            skipped.append(f"{where}: leads to {seen[key]}, already walked (a link loop or a second link); not "
                           f"walked again")
            dirs[:] = []
            continue
        seen[key] = where
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(where) / name
            (pictures if is_picture_name(path) else side).append(path)
    if side:
        kinds = sorted({p.suffix.lower() or "no extension" for p in side})
        skipped.append(f"{len(side)} file(s) that are not pictures ({', '.join(kinds)}): "
                       + ", ".join(str(p.relative_to(folder)) for p in side))
    return pictures, skipped

"""Image checks for the manifest: readable, complete, large enough, and a content hash for duplicates.

Each file is read for its bytes (the hash and the trailer check: a PNG must end with IEND, a JPEG with EOI), then
`utils.core.imageio.read_image` checks its type, the size limits and the structure without decoding every pixel. Results are cached by path,
size and modification time, so a re-run only looks at new or changed files.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from utils.core.progress import tqdm

from utils.core.atomic import atomic_write_text
from utils.core.imageio import ImageReadError, read_image

COLUMNS = ["image", "bytes", "mtime", "ok", "width", "height", "sha1", "error"]


def inspect_image(path: str, want_hash: bool = True) -> dict:
    p = Path(path)
    out = {"image": path, "bytes": -1, "mtime": 0.0, "ok": False, "width": 0, "height": 0, "sha1": "", "error": ""}
    try:
        st = p.stat()
        out["bytes"], out["mtime"] = st.st_size, st.st_mtime
        data = p.read_bytes()
        if want_hash:
            out["sha1"] = hashlib.sha1(data).hexdigest()
        if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-16:]:
            raise ValueError("truncated PNG (no IEND chunk at the end)")
        if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-16:]:
            raise ValueError("truncated JPEG (no end-of-image marker)")
        pic = read_image(p, decode=False)  # header, structure and size limits, no pixel decoded
        out["width"], out["height"] = pic.width, pic.height
        out["ok"] = True
    except ImageReadError as exc:
        out["error"] = str(exc)
    except Exception as exc:  # any other reading error means the file cannot be used
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def inspect_images(paths: list[str], cache: Path | None = None, want_hash: bool = True, workers: int = 0,
                   progress: bool = True) -> pd.DataFrame:
    """One row per path (COLUMNS); unchanged files are taken from the cache CSV, which is then updated."""
    known = pd.DataFrame(columns=COLUMNS)
    if cache is not None and Path(cache).is_file():
        known = pd.read_csv(cache, keep_default_na=False)
    fresh = {}
    for row in known.to_dict("records"):
        try:
            st = os.stat(row["image"])
        except OSError:
            continue
        if st.st_size == int(row["bytes"]) and abs(st.st_mtime - float(row["mtime"])) < 1e-3 and \
                (row["sha1"] or not want_hash):
            fresh[row["image"]] = row
    todo = [p for p in dict.fromkeys(paths) if p not in fresh]
    with ThreadPoolExecutor(workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = list(tqdm(pool.map(lambda p: inspect_image(p, want_hash), todo), total=len(todo),
                            desc="checking images", unit="img", disable=not progress))
    table = pd.DataFrame(list(fresh.values()) + results, columns=COLUMNS)
    table["ok"] = table["ok"].astype(str).str.lower().isin(["true", "1"])
    if cache is not None:
        atomic_write_text(Path(cache), table.to_csv(index=False))
    return table.set_index("image").loc[list(dict.fromkeys(paths))].reset_index()

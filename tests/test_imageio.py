"""Bad input at the door: one reader for every picture, and what predict and step 01 make of awkward files."""
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from utils.core.imageio import ImageReadError, read_image
from utils.core.labels import LABELS as THE_LABELS
from utils.core.paths import resolve_paths
from utils.data.assemble import build_manifest
from utils.ensemble.predictor import load_package
from utils.ensemble.predict import main as predict_main
from utils.core.config import resolve_config

LABELS = list(THE_LABELS)  # a list: pandas reads a tuple as one key


def _page(h=360, w=480) -> np.ndarray:
    """A good picture: dark cloth, a bright sheet with a trace, and a mark in its top-left corner (for rotation)."""
    img = np.full((h, w, 3), 40, np.uint8)
    cv2.rectangle(img, (40, 30), (w - 40, h - 30), (245, 245, 245), -1)
    cv2.line(img, (60, h // 2), (w - 60, h // 2), (20, 20, 20), 2)
    cv2.rectangle(img, (50, 40), (110, 90), (0, 0, 200), -1)
    return img


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h pixels and holds none (the 280 kB 40000x40000 file, in 60 bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def awkward_folder(root: Path) -> dict[str, str]:
    """The awkward files of a new user's folder, made from one good picture; name -> what must happen."""
    root.mkdir(parents=True, exist_ok=True)
    good = _page()
    cv2.imwrite(str(root / "good.jpg"), good, [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    cv2.imwrite(str(root / "tiny.png"), good[:9, :12])
    _png_header_only(root / "huge.png", 40000, 40000)
    Image.fromarray(good[..., ::-1]).save(root / "anim.gif")
    os.symlink("/etc/hostname", root / "outside.jpg")  # followed wherever it leads: there, a text file
    (root / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(400))
    (root / "notes.jpg").write_text("this is a text file with an image extension\n")
    (root / "empty.png").write_bytes(b"")
    rgba = np.dstack([good[..., ::-1], np.full(good.shape[:2], 255, np.uint8)])
    rgba[:, :30, 3] = 0  # a transparent margin: must become paper white, not black
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    cv2.imwrite(str(root / "deep16.png"), good.astype(np.uint16) * 257)
    cv2.imwrite(str(root / "gray.png"), cv2.cvtColor(good, cv2.COLOR_BGR2GRAY))
    rotated = Image.fromarray(np.ascontiguousarray(np.rot90(good[..., ::-1], 1)))  # stored sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with the EXIF note that says "turn me 90 degrees clockwise"
    rotated.save(root / "exif_rotated.jpg", exif=exif, quality=95)
    for ext in ("webp", "tiff", "bmp"):
        Image.fromarray(good[..., ::-1]).save(root / f"as_{ext}.{ext}")
    (root / "nested").mkdir()
    cv2.imwrite(str(root / "nested" / "inner.jpg"), good)
    return {"truncated": "truncated or corrupt image data", "tiny": "image too small: 12x9 px",
            "huge": "image too large: 40000x40000 (1600.0 Mpx); the limit is 80 Mpx",
            "anim": "not an image file type (.gif); accepted: .png, .jpg",
            "outside": "cannot decode: not an image", "junk": "cannot decode: not an image",
            "notes": "cannot decode: not an image", "empty": "empty file (0 bytes)"}


def test_reader_normalises_what_it_can_read(tmp_path):
    awkward_folder(tmp_path)
    good = read_image(tmp_path / "good.jpg").image
    for name in ("rgba.png", "deep16.png", "gray.png", "exif_rotated.jpg", "as_webp.webp", "as_tiff.tiff", "as_bmp.bmp"):
        pic = read_image(tmp_path / name, min_side=64)
        assert pic.image.dtype == np.uint8 and pic.image.shape == good.shape, name
        diff = np.abs(pic.image[:, 30:].astype(int) - good[:, 30:].astype(int))  # (rgba.png: a transparent margin)
        assert diff.mean() < 6, (name, diff.mean())  # the same picture
    rgba = read_image(tmp_path / "rgba.png").image
    assert rgba[:, :30].min() == 255  # transparency on white paper
    upright = read_image(tmp_path / "exif_rotated.jpg").image
    assert upright[40:90, 50:110, 2].mean() > 150  # the red mark is back in the top-left corner


def test_reader_refuses_with_the_numbers(tmp_path):
    expected = awkward_folder(tmp_path)
    for stem, message in expected.items():
        path = next(tmp_path.glob(f"{stem}.*"))
        with pytest.raises(ImageReadError) as err:
            read_image(path, min_side=64)
        assert message in str(err.value), (stem, str(err.value))
    with pytest.raises(ImageReadError, match=r"image too large: 40000x40000"):  # step 01's header-only reading
        read_image(tmp_path / "huge.png", decode=False)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_a_folder_walk_follows_links_and_lists_what_it_skips(tmp_path):
    """Links to folders and files are followed wherever they lead; a loop is walked once and said; side files are
    listed once by kind; a dangling link named like a picture stays, for its reading to say so."""
    from utils.core.imageio import is_picture_name, walk_pictures

    dataset, pics = tmp_path / "dataset", tmp_path / "pics"
    (dataset / "deep").mkdir(parents=True)
    cv2.imwrite(str(dataset / "deep" / "a.png"), _page())
    pics.mkdir()
    cv2.imwrite(str(pics / "b.jpg"), _page())
    os.symlink(dataset, pics / "linked")  # a folder of links to a dataset
    os.symlink(pics, dataset / "deep" / "back")  # ... and a loop back
    os.symlink(tmp_path / "gone.jpg", pics / "dangling.jpg")
    for name in ("meta.json", "labels.csv", "record.hea", ".hidden.jpg"):
        (pics / name).write_text("x")
    found, skipped = walk_pictures(pics)
    assert [p.relative_to(pics).as_posix() for p in found] == ["b.jpg", "dangling.jpg", "linked/deep/a.png"]
    assert len(skipped) == 2 and "linked/deep/back: leads to" in skipped[0] and "already walked" in skipped[0]
    assert skipped[1] == "3 file(s) that are not pictures (.csv, .hea, .json): labels.csv, meta.json, record.hea"
    assert [is_picture_name(n) for n in ("x.GIF", "x.heic", "x.webp", "x.json", "x", "x.dat")] == [True, True, True,
                                                                                                  False, False, False]
    with pytest.raises(ImageReadError, match=r"dangling.jpg is a link to .*gone.jpg, which does not exist"):
        read_image(found[1])


def test_predict_marks_every_bad_file_and_keeps_the_rest(tmp_path, package, capsys):
    expected = awkward_folder(tmp_path / "pics")
    (tmp_path / "pics" / "meta.json").write_text("{}")  # side files: listed once, not rows
    (tmp_path / "pics" / "labels.csv").write_text("id\n")
    out = tmp_path / "preds.csv"
    assert predict_main(["--model", str(package), "--images", str(tmp_path / "pics"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("skipped 2 file(s) that are not pictures (.csv, .json): labels.csv, "
                                         "meta.json") == 1
    table = pd.read_csv(out, keep_default_na=False).set_index("id")
    assert len(table) == 17  # every picture, nested ones too
    for stem, message in expected.items():
        assert message in table.loc[stem, "error"], stem
        assert table.loc[stem, "MI"] == ""  # no probability for a refused file
    fine = [i for i in table.index if i not in expected]
    assert sorted(fine) == sorted(["good", "rgba", "deep16", "gray", "exif_rotated", "inner", "as_webp", "as_tiff",
                                   "as_bmp"])
    assert (table.loc[fine, "error"] == "").all()
    probs = table.loc[fine, LABELS].astype(float)
    assert probs.apply(lambda c: c.between(0, 1)).all().all()
    box = table.loc["exif_rotated", "roi_box"]
    assert box == table.loc["gray", "roi_box"]  # EXIF applied: the same crop as the upright picture
    # the CSV is never overwritten
    assert predict_main(["--model", str(package), "--images", str(tmp_path / "pics"), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_bad_model_files_are_one_line(tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    cv2.imwrite(str(pics / "a.jpg"), _page())
    junk = tmp_path / "random.pt"
    junk.write_bytes(os.urandom(2000))

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned > " + str(tmp_path / "owned.txt"),))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "ecg-photo-ensemble/1", "x": Payload()}, evil)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    cases = {junk: "not an ensemble package; it cannot be read as plain tensors", evil: "never loaded in a way",
             other: "no 'ecg-photo-ensemble/1' format mark", tmp_path / "absent.pt": "no such file"}
    for model, message in cases.items():
        rc = predict_main(["--model", str(model), "--images", str(pics), "--out", str(tmp_path / f"{model.stem}.csv")])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and "Traceback" not in err, (model.name, err)
        assert "weights_only=False" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "owned.txt").exists()
    with pytest.raises(ValueError, match="not an ensemble package"):
        load_package(junk)


def test_step01_reports_each_bad_file_and_keeps_the_rest(tmp_path):
    root = tmp_path / "input" / "bhf-ecg"
    expected = awkward_folder(root / "train")
    ids = [p.stem for p in sorted((root / "train").iterdir()) if p.suffix != ".gif" and not p.is_dir()]
    rows = "".join(f"{i},0,0,0,0,{n % 2}\n" for n, i in enumerate(ids))
    (root / "train.csv").write_text("id,MI,AF,HYP,CD,STTC\n" + rows)
    (root / "test").mkdir()
    cv2.imwrite(str(root / "test" / "t1.png"), _page())
    (root / "sample_submission.csv").write_text("id,MI,AF,HYP,CD,STTC\nt1,0,0,0,0,0\n")
    cfg = resolve_config("smoke", {"input_root": str(tmp_path / "input"), "working_root": str(tmp_path / "w"),
                                   "target": "competition", "n_folds": 2, "min_image_side": 64,
                                   "stage1_synth": False})
    step_dir = tmp_path / "step"
    step_dir.mkdir()
    out = build_manifest(cfg, resolve_paths(cfg), {}, step_dir, progress=False)
    report, manifest = out["report"], out["manifest"]
    detail = {Path(w).stem: d for w, d in zip(report["where"], report["detail"])}
    for stem in ("huge", "notes", "empty"):
        assert expected[stem] in detail[stem], (stem, detail.get(stem))
    assert "truncated JPEG (no end-of-image marker)" in detail["truncated"]
    assert "truncated PNG (no IEND chunk at the end)" in detail["junk"]
    assert "12x9 < 64 px" in detail["tiny"]
    kept = set(manifest.loc[manifest.split == "train", "id"].str.split(":").str[-1])
    assert {"good", "rgba", "deep16", "gray", "exif_rotated"} <= kept
    assert not kept & {"truncated", "tiny", "huge", "junk", "notes", "empty", "outside"}


def test_a_file_pillow_cannot_identify_is_refused_after_ultralytics_patched_pillow(tmp_path):
    """ultralytics, once imported, replaces Image.open with one that would pip-install a HEIF plugin for such a file
    (offline: ModuleNotFoundError); the reader asks Pillow itself and says what it is."""
    import ultralytics  # noqa: F401 - its import applies the patch

    assert Image.open.__module__.startswith("ultralytics")  # the patch is in place
    (tmp_path / "notes.jpg").write_bytes(b"not a picture at all, only text with an image extension")
    with pytest.raises(ImageReadError, match="cannot decode: not an image, or an unknown format"):
        read_image(tmp_path / "notes.jpg")

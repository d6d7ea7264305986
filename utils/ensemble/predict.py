"""The predict command: the packaged ensemble on your pictures, one CSV row per picture.

    python -m utils.ensemble.predict --model model.pt --images FILE_OR_DIR --out preds.csv [--detector best.pt]
        [--sam-checkpoint sam.pth] [--gradcam DIR]

Pictures go through `Predictor.read` (utils.ensemble.predictor), the same path as step 05's test set: a file that
cannot be read gets a row with its error. `--out` is checked before any work and locked against a second writer.
"""
from __future__ import annotations

import argparse
import errno
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.atomic import atomic_write_text
from utils.core.cam import CAM_METHODS, save_overlay
from utils.core.cli import add_debug, run_cli
from utils.core.imageio import walk_pictures
from utils.core.labels import LABELS
from utils.ensemble.predictor import Predictor, Reading
from utils.preprocess.orient import ECG_BEATS, ECG_ROWS


def list_images(target: Path) -> tuple[list[Path], list[str]]:
    """The pictures to predict and what was skipped with why (utils.core.imageio.walk_pictures); none is an error
    that says where it looked."""
    if target.is_file():
        return [target], []
    if target.is_dir():
        found, skipped = walk_pictures(target)
        if not found:
            raise FileNotFoundError(f"--images {target}: a folder with no pictures in it (nothing to predict)"
                                    + (f"; skipped {'; '.join(skipped)}" if skipped else ""))
        return found, skipped
    if target.is_symlink():
        raise FileNotFoundError(f"--images {target}: a link to {target.readlink()}, which does not exist")
    raise FileNotFoundError(f"--images {target}: no such file or folder")


def picture_ids(paths: list[Path], root: Path) -> tuple[list[str], dict[str, str]]:
    """One id per file: its name without extension, or, where several files share that name, its path under the
    input folder (extension kept); returns the ids and a warning per renamed id."""
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    ids, notes = [], {}
    for p in paths:
        if stems[p.stem] == 1:
            ids.append(p.stem)
            continue
        rel = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        ids.append(rel)
        notes[rel] = f"{stems[p.stem]} files are named {p.stem!r}: this row's id is its path"
    return ids, notes


def open_output(out: Path) -> Path:
    """Before any work: --out new, its folder writable, and no other predict writing it. Returns the lock file,
    which the caller removes when the table is written."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise FileExistsError(f"{out} exists; choose another --out (nothing is overwritten)")
    folder = out.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"--out {out}: {folder} is not a folder" if folder.exists() else
                                 f"--out {out}: the folder {folder} does not exist")
    lock = folder / f".{out.name}.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise FileExistsError(f"--out {out}: another predict is writing it (lock {lock}, "
                              f"{lock.read_text().strip() or 'no pid'}); wait for it, or remove the lock if it "
                              f"died") from None
    except OSError as err:  # no permission, or a read-only file system (/kaggle/input)
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise PermissionError(f"--out {out}: the folder {folder} is not writable ({os.strerror(err.errno)})") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(f"pid {os.getpid()}\n")
    return lock


@dataclass(frozen=True)
class CamRequest:
    """predict --gradcam: where the overlays go, for which labels (empty: each picture's most probable) and how."""
    folder: Path
    labels: tuple[str, ...] = ()
    method: str = "gradcam"


def write_cams(pred: Predictor, img: np.ndarray, prepared: np.ndarray, rec: dict, scores: np.ndarray, pid: str,
               request: CamRequest) -> list[Path]:
    """The ensemble's CAM (every fold) on the original picture, one file per label asked for."""
    ks = [LABELS.index(k) for k in request.labels] or [int(np.argmax(scores))]
    photo, _ = pred.photo_cams(img, prepared, rec, ks, request.method)
    name = pid.replace(os.sep, "__")
    return [save_overlay(img, m, f"{LABELS[k]} {scores[k]:.2f} ({request.method}, {len(pred.models)} folds)",
                         Path(request.folder) / f"{name}_{LABELS[k]}.jpg") for k, m in zip(ks, photo)]


def cam_request(folder: Path | None, labels: str = "", method: str = "gradcam") -> CamRequest | None:
    """--gradcam's options checked before any picture is read."""
    if folder is None:
        if labels:
            raise ValueError("--gradcam-labels needs --gradcam FOLDER")
        return None
    wanted = tuple(k.strip() for k in labels.split(",") if k.strip())
    unknown = [k for k in wanted if k not in LABELS]
    if unknown:
        raise ValueError(f"--gradcam-labels {', '.join(unknown)}: not a label; choose from {', '.join(LABELS)}")
    if method not in CAM_METHODS:
        raise ValueError(f"--cam-method {method!r}: choose from {', '.join(CAM_METHODS)}")
    return CamRequest(Path(folder), wanted, method)


def page_columns(rec: dict) -> tuple[dict, list[str]]:
    """The page's columns of a prediction row (the page reader's ECG score, empty without a reader; the gate's
    verdict and the traces' say, empty when nothing decides; the turn the traces find, its evidence and the turn
    undone), and what the row must say: why its yes/no decisions are withheld, and how the page was turned or why it
    was not."""
    page, orient, turn = rec.get("page") or {}, rec.get("orient") or {}, rec.get("turn", 0)
    cols = {"ecg_score": page.get("ecg_score", np.nan), "is_ecg": int(page["is_ecg"]) if page else "",
            "traces_ecg": int(page["traces_ecg"]) if "traces_ecg" in page else "",
            "turned": turn, "turn_found": orient.get("turn_found", ""),
            "turn_evidence": orient.get("turn_evidence", np.nan)}
    said = []
    if page and not page["is_ecg"]:
        why = [f"page reader's score {page['ecg_score']:.2f}"] if "ecg_score" in page else []
        if "traces_ecg" in page:
            why.append(f"traces: {orient.get('rows', 0)} row(s), {orient.get('beats', 0)} beats"
                       f"{'' if page['traces_ecg'] else f' (an ECG shows {ECG_ROWS} and {ECG_BEATS} at least)'}")
        said.append(f"not an ECG ({'; '.join(why)}): no yes/no decisions")
    if turn:
        said.append(f"turned back by {turn} degrees to stand upright (traces' evidence {orient['turn_evidence']:.1f})")
    elif orient:
        said.extend(unsure_turn(orient, page))
    return cols, said


HEAD_SURE = 0.9  # the page reader's turn head, trusted only to raise a doubt: it was learnt on the synthesizer's pages


def unsure_turn(orient: dict, page: dict) -> list[str]:
    """What the row says of a page read as it came although it may be turned: the traces lean to a turn they are
    not sure of (or are sure of in a package that does not turn pages), or they lean upright without being sure
    while the page reader's own head is sure of a turn. Never a guess acted on: a doubt said."""
    lean, evidence = orient.get("turn_found", 0), orient.get("turn_evidence", 0.0)
    head, head_p = page.get("reader_turn", 0), page.get("reader_turn_p", 0.0)
    if lean:
        how = "sure, but this package does not turn pages" if orient.get("sure") else "not sure"
        also = f"; the page reader's head says {head} too (p {head_p:.2f})" if head == lean else ""
        where = "lie sideways" if lean % 180 else "stand upside down"
        return [f"the page may {where} (turned by {lean} degrees; traces' evidence {evidence:.1f}, {how}{also}): "
                f"read as it came"]
    if head and head_p >= HEAD_SURE and not orient.get("sure"):
        return [f"which way up is unsure: the traces lean upright (evidence {evidence:.1f}, not sure) where the page "
                f"reader's head says turned by {head} degrees (p {head_p:.2f}): read as it came"]
    return []


def prediction_row(pred: Predictor, reading: Reading, path: Path, pid: str, note: str = "") -> dict:
    """One picture's row: the ensemble's scores, yes/no decisions (withheld when the page reader finds no ECG), the
    page's columns (ECG score, turn), with a signal reader each reader's scores (image_*, signal_*), the digitiser's
    note (layout read, or why not) and what it followed (`digitiser`: the trace segmenter or the classical ink), the
    region the model read (`roi_box`, on the page as it was stood upright) beside
    the sheet's box, warnings and the error."""
    row = {"id": pid, "file": str(path), "warning": ""}
    if reading.error:  # one bad file is a row with its error, never the end of the run
        return row | {k: np.nan for k in LABELS} | {"error": reading.error, "warning": note}
    scores, decisions = pred.verdict(reading)
    page, said = page_columns(reading.rec)
    withheld = bool(page["is_ecg"] == 0)
    rec = reading.rec
    row.update({k: round(float(p), 6) for k, p in zip(LABELS, scores)})
    row.update({f"{k}_positive": "" if withheld else int(d) for k, d in zip(LABELS, decisions)}, **page)
    if reading.signal_probs is not None:  # the two readers apart, and what the digitiser read
        image, _ = pred.decide(reading.fold_probs[:, None])
        digitised = rec["digitised"]
        row.update({f"image_{k}": round(float(p), 6) for k, p in zip(LABELS, image[0])})
        row.update({f"signal_{k}": round(float(p), 6) if np.isfinite(p) else np.nan
                    for k, p in zip(LABELS, reading.signal_probs)}, digitised=digitised.note(),
                   digitiser=pred.signal.digitiser)
        if not digitised.read:
            said.append(f"{digitised.note()}: the image model alone")
        elif digitised.flags:
            said.append(f"digitised leads flagged: {', '.join(digitised.flags)}")
    near = pred.near_threshold(reading)
    row["near_threshold"] = ",".join(near)
    if near and not withheld:
        said.append(f"{', '.join(near)}: decided within the re-encoding noise of the threshold (a re-saved, converted "
                    f"or rescaled copy of this page may be decided otherwise)")
    row.update(roi_box=rec["window"], sheet_box=rec["box"], roi_method=rec["method"], fallback=rec["fallback"],
               reason=rec["reason"],
               error="", warning="; ".join(filter(None, [note, *said, *reading.warnings])))
    return row


def run(model: Path, images: Path, out: Path, detector: str = "", gradcam: Path | CamRequest | None = None,
        sam_checkpoint: str = "", device: str = "auto") -> pd.DataFrame:
    if gradcam is not None and not isinstance(gradcam, CamRequest):
        gradcam = cam_request(gradcam)
    paths, skipped = list_images(images)  # before anything is opened or written
    lock = open_output(out)
    for line in skipped:
        print(f"skipped {line}")
    try:
        return _run(model, images, paths, out, detector, gradcam, sam_checkpoint, device)
    finally:
        lock.unlink(missing_ok=True)


def peak_mb(who: int) -> float:
    """The peak resident memory of this process (RUSAGE_SELF) or of its largest finished worker (RUSAGE_CHILDREN)."""
    return resource.getrusage(who).ru_maxrss / 1024


def _run(model, images, paths, out, detector, gradcam, sam_checkpoint, device) -> pd.DataFrame:
    pred = Predictor(model, detector, device, sam_checkpoint)
    if pred.signal is not None and pred.signal.problem:
        print(f"WARNING {pred.signal.problem}")
    root = images if images.is_dir() else images.parent
    ids, notes = picture_ids(paths, root)
    rows, t0 = [], time.perf_counter()
    # batches of one: originals can be large; on a CPU the pictures are prepared in a worker per core
    for path, pid, reading in zip(paths, ids, pred.read(paths, batch_size=1, keep=gradcam is not None)):
        row, t_cam = prediction_row(pred, reading, path, pid, notes.get(pid, "")), time.perf_counter()
        if gradcam is not None and not reading.error:
            try:
                write_cams(pred, reading.image, reading.prepared, reading.rec, np.array([row[k] for k in LABELS]),
                           pid, gradcam)
            except Exception as exc:  # noqa: BLE001 - the row keeps its prediction and says why it has no CAM
                row["warning"] = "; ".join(filter(None, [row["warning"], f"no CAM: {type(exc).__name__}: {exc}"]))
        # the picture's own time (read, prepared, digitised, its forward pass, its CAM), whichever process took it
        row["latency_ms"] = round((reading.seconds + time.perf_counter() - t_cam) * 1000, 1)
        rows.append(row)
        print(f"{path.name}: {row['latency_ms']} ms" + (f"  ERROR {row['error']}" if row["error"] else "")
              + (f"  WARNING {row['warning']}" if row["warning"] else ""))
    wall = time.perf_counter() - t0
    table = pd.DataFrame(rows)
    atomic_write_text(out, table.to_csv(index=False))
    ok = table[table["error"] == ""]
    if len(ok):
        print(f"{len(ok)} picture(s), median latency {ok['latency_ms'].median():.0f} ms, "
              f"{wall / len(table):.2f} s per picture in all, peak memory {peak_mb(resource.RUSAGE_SELF):.0f} MB"
              + (f" ({peak_mb(resource.RUSAGE_CHILDREN):.0f} MB in a worker)" if peak_mb(resource.RUSAGE_CHILDREN) else "")
              + f"; {len(table) - len(ok)} error(s)")
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.ensemble.predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the package (model.pt) written by step 05")
    ap.add_argument("--images", type=Path, required=True, help="a picture or a folder of pictures")
    ap.add_argument("--out", type=Path, required=True, help="CSV to write (one row per picture)")
    ap.add_argument("--detector", default="", help="YOLO weights (step 02's best.pt); default: classical finder")
    ap.add_argument("--sam-checkpoint", default="", help="SAM checkpoint, for a package trained on SAM segmentation")
    ap.add_argument("--gradcam", type=Path, help="write the ensemble's CAM on each original picture into this folder")
    ap.add_argument("--gradcam-labels", default="", help="labels to draw, comma-separated (default: the most probable)")
    ap.add_argument("--cam-method", default="gradcam", help=f"one of {', '.join(CAM_METHODS)}")
    ap.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    return run_cli(_predict, add_debug(ap).parse_args(argv))


def _predict(a) -> int:
    run(a.model, a.images, a.out, a.detector, cam_request(a.gradcam, a.gradcam_labels, a.cam_method), a.sam_checkpoint,
        a.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())

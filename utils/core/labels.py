"""The five findings, in the order every table, array and submission column uses; and the one reader of label
tables (the competition's CSV, the synthesizer's train.csv and test_labels.csv, WFDB label CSVs)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

LABELS = ("MI", "AF", "HYP", "CD", "STTC")
ID_NAMES = ("id", "ecg_id", "image_id", "record_id", "filename", "file_name", "file", "image", "path")
# One rule for a label's value: 0 or 1 (as a number or a truth word), or empty for unknown; anything else is refused.
YES, NO = {"1", "1.0", "true"}, {"0", "0.0", "false"}


class LabelTableError(ValueError):
    """A label table that cannot be read by the rule; the message names the file, line and column."""


def find_columns(df: pd.DataFrame, where: str) -> tuple[str, dict[str, str]]:
    """The id column and {label: column} in any order and case; a clear error naming the file otherwise."""
    lower = {c.strip().lower(): c for c in df.columns}
    labels = {k: lower[k.lower()] for k in LABELS if k.lower() in lower}
    missing = [k for k in LABELS if k not in labels]
    if missing:
        raise LabelTableError(f"{where}: no column for {missing} (columns: {list(df.columns)})")
    id_col = next((lower[n] for n in ID_NAMES if n in lower), None)
    if id_col is None:
        others = [c for c in df.columns if c not in labels.values()]
        if not others:
            raise LabelTableError(f"{where}: no id column besides the labels")
        id_col = others[0]
    return id_col, labels


def label_value(value, where: str) -> int | None:
    """1, 0 or None (empty: unknown); any other value raises LabelTableError with `where`."""
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip().lower()
    if text == "":
        return None
    if text in YES:
        return 1
    if text in NO:
        return 0
    raise LabelTableError(f"{where}: {value!r} is not a label value (0, 1 or empty)")


def read_table(path: Path, **kwargs) -> pd.DataFrame:
    """A CSV as pandas reads it, or LabelTableError naming the file and what is wrong (a byte that is not UTF-8 with
    its offset and the line it falls on, a malformed row, an empty or unreadable file)."""
    path = Path(path)
    try:
        return pd.read_csv(path, **kwargs)
    except UnicodeDecodeError:  # pandas counts from the chunk it decoded: the file's own offset is found here
        data = path.read_bytes()
        try:
            data.decode("utf-8")
            where = "somewhere"
        except UnicodeDecodeError as err:
            line = data[:err.start].count(b"\n") + 1
            where = f"byte 0x{data[err.start]:02x} at offset {err.start} (line {line}) is"
        raise LabelTableError(f"{path}: {where} not UTF-8; save the table as UTF-8") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise LabelTableError(f"{path}: cannot be read as a CSV table ({type(err).__name__}: {err})") from None


def read_label_table(path: Path) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """Rows of id (a string, as written: '00001' stays '00001'), the five labels (1, 0 or None), `line` (as a
    spreadsheet numbers it) and the table's other columns; and its problems: each repeated id (the first row kept,
    saying whether the labels agree). A value other than 0, 1 or empty, or a missing column, raises
    LabelTableError naming the file, line and column."""
    path = Path(path)
    df = read_table(path, dtype=str, keep_default_na=False)
    id_col, cols = find_columns(df, str(path))
    rows, problems, first = [], [], {}
    for n, rec in enumerate(df.to_dict("records"), start=2):
        rid = str(rec[id_col]).strip()
        if not rid:
            problems.append(("empty_id", f"{path.name}:{n}", "a row without an id; not used"))
            continue
        labels = {k: label_value(rec[c], f"{path}, line {n}, column {c}") for k, c in cols.items()}
        if rid in first:
            line, earlier = first[rid]
            agree = "the same labels" if earlier == labels else "other labels"
            problems.append(("duplicate_id", f"{path.name}:{n} (id {rid})",
                             f"id seen on line {line} with {agree}; the first row kept"))
            continue
        first[rid] = (n, labels)
        others = {c: v for c, v in rec.items() if c != id_col and c not in cols.values()}
        rows.append({**others, "id": rid, **labels, "line": n})
    columns = list(dict.fromkeys(["id", *LABELS, "line", *(rows[0] if rows else [])]))
    return pd.DataFrame(rows, columns=columns, dtype=object), problems  # object: labels stay 1, 0 or None

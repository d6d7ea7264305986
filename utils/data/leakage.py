"""The one leakage check: is a record, or its patient, in the target set or in the real-ECG test set?

Stage I must never see a rendering of an ECG it is later scored on, nor another ECG of the same patient.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from utils.core.paths import present_folders
from utils.data.sources import ptbxl_id
from utils.synth.wfdb_source import list_records


@dataclass(frozen=True)
class RealTest:
    """PTB-XL ecg ids and patient groups of the real-ECG test folders that are present (real_check_dirs)."""
    ids: frozenset = field(default_factory=frozenset)
    groups: frozenset = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(self.ids or self.groups)

    def holds(self, ecg_ids: pd.Series, groups: pd.Series) -> pd.Series:
        """Per row: its ECG, or its patient, is in the real-ECG test set."""
        ids = pd.to_numeric(ecg_ids, errors="coerce")
        grp = groups.fillna("").astype(str)
        return ids.isin(list(self.ids)).to_numpy() | (grp.isin(list(self.groups)) & (grp != "")).to_numpy()


def real_test_records(spec: str) -> RealTest:
    """The real-ECG test set named by a comma-separated list of PTB-XL-layout folders (absent ones skipped)."""
    ids, groups = set(), set()
    for folder in present_folders(spec)[0]:
        refs, _ = list_records(folder)
        ids |= {i for i in (ptbxl_id(r.id) for r in refs if r.source == "ptbxl") if i is not None}
        groups |= {r.group for r in refs if r.group}
    return RealTest(frozenset(ids), frozenset(groups))


def leakage_guard(df: pd.DataFrame, allow: bool, real_test: RealTest = RealTest()) -> dict:
    """Stage I rows rendered from PTB-XL records that are target ECGs, or records or patients of the real-ECG test
    set: refused unless allowed (allow_ptbxl_overlap)."""
    target = set(df.loc[df["stage"] == "II", "ecg_id"].dropna().astype(int))
    stage1 = df[(df["stage"] == "I") & df["ecg_id"].notna()]
    overlap = stage1[stage1["ecg_id"].astype(int).isin(target)]
    info = {"ptbxl_stage1_rows": int(len(stage1)), "overlapping_rows": int(len(overlap)),
            "overlapping_ecg_ids": int(overlap["ecg_id"].nunique())}
    if len(overlap) and not allow:
        raise ValueError(f"leakage: {len(overlap)} Stage I rows are renders of {info['overlapping_ecg_ids']} "
                         f"PTB-XL ECGs that are also in the target set; remove them or set allow_ptbxl_overlap")
    if real_test:
        group = stage1["group"] if "group" in stage1 else pd.Series("", index=stage1.index)
        hit = stage1[real_test.holds(stage1["ecg_id"], group)]
        info.update(real_test_records=len(real_test.ids), real_test_overlap_rows=int(len(hit)))
        if len(hit) and not allow:
            shown = ", ".join(f"{r.id} ({r.group})" for r in hit.head(5).itertuples())
            raise ValueError(f"leakage: {len(hit)} Stage I rows are renders of records or patients of the real-ECG "
                             f"test set (real_check_dirs), e.g. {shown}; leave those records out of Stage I or set "
                             f"allow_ptbxl_overlap")
    return info

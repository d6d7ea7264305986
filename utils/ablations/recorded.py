"""The strategy table's recorded waveforms: ablation_stage1_records rendered scan-like for Stage I, leaving out every
record whose ECG or patient is in the real-ECG test set (the one leakage check, utils.data.leakage)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from utils.core.keys import settings_key
from utils.core.paths import present_folders, resolve_paths
from utils.data.leakage import real_test_records
from utils.data.sources import ptbxl_id
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings
from utils.synth.wfdb_source import list_records

RECORDED_SEED_OFFSET = 7  # the recorded waveforms' pages get their own draw of paper and scan styles


def recorded_settings(cfg) -> SynthSettings:
    return SynthSettings.from_config(cfg, "scan", RECORDED_SEED_OFFSET)


def recorded_folder(cfg) -> Path | None:
    """Where the grid renders ablation_stage1_records scan-like (None when none of its folders is present)."""
    folders = present_folders(cfg["ablation_stage1_records"])[0]
    if not folders:
        return None
    key = settings_key({"folders": [str(f) for f in folders], "s": recorded_settings(cfg).to_dict(),
                        "test": cfg["real_check_dirs"]})
    return resolve_paths(cfg).data_root / f"stage1-recorded-{key}"


def render_recorded(cfg, progress: bool = True) -> dict | None:
    """Render ablation_stage1_records scan-like for Stage I (cached), leaving out every record whose ECG or patient
    is in the real-ECG test set; the left-out records are listed in left_out.csv beside the renders."""
    dest = recorded_folder(cfg)
    if dest is None:
        return None
    real = real_test_records(cfg["real_check_dirs"])
    refs, left_out = [], []
    for folder in present_folders(cfg["ablation_stage1_records"])[0]:
        found = list_records(folder)[0]
        ids = pd.Series([r.id for r in found], dtype=str)
        held = real.holds(ids.map(ptbxl_id), pd.Series([r.group or "" for r in found], dtype=str)) \
            if found else []
        for ref, out in zip(found, held):
            if out:
                left_out.append({"id": ref.id, "group": ref.group, "folder": str(folder),
                                 "why": "ECG or patient in the real-ECG test set"})
            else:
                refs.append(ref)
    if len({r.id for r in refs}) != len(refs):
        raise ValueError(f"ablation_stage1_records: record ids repeat across {cfg['ablation_stage1_records']}")
    summary = generate_dataset(dest, recorded_settings(cfg), n_train=len(refs), refs=refs,
                               workers=cfg["num_workers"], progress=progress)
    pd.DataFrame(left_out, columns=["id", "group", "folder", "why"]).to_csv(dest / "left_out.csv", index=False)
    return {**summary, "records": len(refs), "left_out": len(left_out)}

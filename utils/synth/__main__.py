"""python -m utils.synth --out DIR --style photo --n-train 1000 --n-test 200 [--from-wfdb DIR | --from-code15 DIR]
    [--limit N] [--shard i/n]"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from utils.core.cli import add_debug, fail, run_cli
from utils.core.keys import split_list
from utils.synth.code15_source import label_counts, list_exams
from utils.synth.dataset import generate_dataset
from utils.synth.generate import STYLES, SynthSettings
from utils.synth.render import LAYOUTS
from utils.synth.wfdb_source import list_records


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: use i/n, e.g. 0/4") from None
    return i, n


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m utils.synth", description=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="output folder (competition-shaped)")
    ap.add_argument("--style", choices=STYLES, default="photo")
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--page-width", type=int, default=2200)
    ap.add_argument("--page-height", type=int, default=1700)
    ap.add_argument("--photo-max-side", type=int, default=3460)
    ap.add_argument("--severity", type=float, default=1.0, help="artefact strength: 0 clean, 1 default")
    ap.add_argument("--jpeg-quality", type=int, default=0, help="0: drawn per image")
    ap.add_argument("--crumple", type=float, default=0.0, help="crumpled paper on every picture, 0-3 (0: flat)")
    ap.add_argument("--crumple-rate", type=float, default=0.0,
                    help="share of pictures crumpled at a strength drawn per picture (the pipeline: photo 0.25, "
                         "scan 0.10)")
    ap.add_argument("--layouts", default="3x4", help=f"comma-separated, from {sorted(LAYOUTS)}")
    ap.add_argument("--workers", type=int, default=0, help="processes; 0: one per core")
    ap.add_argument("--shard", type=_shard, default=(0, 1), help="make only indices i mod n (i/n)")
    ap.add_argument("--from-wfdb", type=Path, help="render these WFDB records instead of simulating")
    ap.add_argument("--from-code15", type=Path, help="render CODE-15%%'s exams (exams.csv + exams_part*.hdf5)")
    ap.add_argument("--labels-csv", type=Path, help="labels (id + MI, AF, HYP, CD, STTC) for --from-wfdb")
    ap.add_argument("--limit", type=int, default=0, help="with --from-wfdb or --from-code15: at most this many")
    ap.add_argument("--save-waveforms", action="store_true", help="also write the plotted signals (.npy)")
    ap.add_argument("--save-traces", action="store_true",
                    help="also write where each lead's trace lies in the picture (traces/<id>.npz)")
    ap.add_argument("--force", action="store_true", help="accept an output folder made with other settings")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = add_debug(build_parser()).parse_args(argv)
    layouts = tuple(split_list(args.layouts))
    bad = [v for v in layouts if v not in LAYOUTS]
    if bad:
        return fail(f"unknown layout(s) {bad}; choose from {sorted(LAYOUTS)}")
    return run_cli(lambda a: _make(a, layouts), args)


def _make(args, layouts: tuple[str, ...]) -> int:
    settings = SynthSettings(style=args.style, seed=args.seed, page_width=args.page_width,
                             page_height=args.page_height, photo_max_side=args.photo_max_side,
                             severity=args.severity, jpeg_quality=args.jpeg_quality, layouts=layouts,
                             crumple=args.crumple, crumple_rate=args.crumple_rate)
    if args.from_wfdb and args.from_code15:
        return fail("--from-wfdb and --from-code15: choose one source")
    refs = None
    if args.from_wfdb or args.from_code15:
        refs, problems = list_records(args.from_wfdb, args.labels_csv) if args.from_wfdb \
            else list_exams(args.from_code15)
        refs = refs[: args.limit] if args.limit else refs
        for rid, why in problems:
            print(f"note: record {rid}: {why}", file=sys.stderr)
        if args.from_code15:
            print(label_counts(refs).to_string(index=False), file=sys.stderr)
    summary = generate_dataset(args.out, settings, args.n_train, args.n_test, refs=refs, workers=args.workers,
                               shard=args.shard, save_waveform=args.save_waveforms,
                               save_traces=args.save_traces)
    print(json.dumps(summary, indent=2))
    if summary["failed"]:
        print(f"{summary['failed']} record(s) could not be rendered: see {args.out / 'failures.csv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

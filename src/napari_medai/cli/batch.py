"""``medai batch IN... --out-dir DIR``: screen every chest CT among some files and folders."""

from __future__ import annotations


def add_parser(sub) -> None:
    from .screen import add_screening_options

    p = sub.add_parser(
        "batch", help="screen a cohort: every chest CT among files and folders, one report folder each",
        description="Runs `medai screen` on each case (a NIfTI file, a DICOM series folder, or the NIfTI files and "
        "DICOM series folders inside a folder given) with the models loaded once, in parallel with dask, and writes "
        "DIR/<case>/ (report.md, report.json, findings.csv, segmentation.nii.gz, key_images/) and DIR/cohort.csv, one row per "
        "case. A case that cannot be read or screened gets its message in cohort.csv; the others go on. A label map "
        "among the files (such as `medai phantom`'s <case>_label.nii.gz) is skipped with a note. "
        "The Lung-RADS size category is decision support, not a diagnosis.")
    p.add_argument("inputs", nargs="+", help="NIfTI files, DICOM series folders, or folders holding them")
    p.add_argument("--out-dir", required=True, help="folder for the case folders and cohort.csv (created if missing; an earlier run's cohort.csv there "
                   "keeps the rows of cases not screened again, and one no run wrote is refused)")
    p.add_argument("--workers", type=int, default=1,
                   help="cases screened at once (default 1; 2 overlap one case's post-processing with another's "
                        "network run: about a fifth faster on a 2-core CPU, for one more case's memory)")
    add_screening_options(p, quiet_help="no line per case screened or skipped (errors are still printed)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from ..batch import COHORT_FILE, find_cases, screen_cases
    from ..errors import InputError
    from ..inference import InferenceSettings
    from ._common import check_device
    from .screen import check_screening_options

    check_screening_options(args)
    if args.workers < 1:  # before the count of cases is printed
        raise InputError(f"--workers must be 1 or more, got {args.workers}")
    check_device(args.device)  # once, before any case (each case failed on its own, and cohort.csv was written)
    cases = find_cases(args.inputs, on_note=lambda text: print(f"note: {text}", file=sys.stderr))
    settings = InferenceSettings(device=args.device, precision=args.precision, tta=args.tta)

    def on_case(record, done, total):
        what = (f"{record.findings} finding(s), highest size category {record.highest_category}"
                if record.status == "ok" else f"skipped: {record.message}" if record.status == "skipped"
                else f"ERROR: {record.message}")
        if not args.quiet or record.status == "error":
            print(f"[{done}/{total}] {record.case}: {what} ({record.seconds:.1f} s)", flush=True)

    def on_start(total):  # after the models have loaded: a model that does not load is the only line
        print(f"{total} case(s) to screen with {args.workers} worker(s)", flush=True)

    records = screen_cases(cases, args.out_dir, workers=args.workers, detector=args.detector,
                           segmenter=args.segmenter, on_case=on_case, on_start=on_start, denoise=args.denoise,
                           score_threshold=args.threshold, max_findings=args.max_findings, settings=settings)
    failed = [r for r in records if r.status == "error"]
    screened = sum(r.status == "ok" for r in records)
    skipped = len(records) - screened - len(failed)  # label maps: not a failure
    print(f"{screened} of {len(records)} case(s) screened"
          + (f", {skipped} label map(s) skipped" if skipped else "")
          + f"; cohort table: {Path(args.out_dir) / COHORT_FILE}")
    return 1 if failed else 0

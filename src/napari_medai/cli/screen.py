"""``medai screen IN --out-dir DIR``: the lung-nodule screening workflow and its report."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "screen", help="lung-nodule screening of a chest CT: findings, segmentation and a report",
        description="Detect lung nodules, segment lungs and nodules, place each finding (lung, upper/middle/lower "
        "third) and write report.md, report.json, findings.csv, segmentation.nii.gz (plus denoised.nii.gz with "
        "--denoise) and a key image of each finding (key_images/finding_NN.png, linked from the report) into OUT_DIR. The Lung-RADS size category is decision support, not a diagnosis.")
    p.add_argument("input", help="chest CT: NIfTI file or DICOM folder, in HU")
    p.add_argument("--out-dir", required=True, help="folder for the report files (created if missing)")
    add_screening_options(p)
    p.set_defaults(func=run)


def add_screening_options(p, quiet_help: str = "no progress bar") -> None:
    """The screening workflow's options, shared with ``medai batch`` (``quiet_help``: what
    --quiet leaves out there)."""
    from ..api import DEFAULT_DETECTION_MODEL, DEFAULT_SEGMENTATION_MODEL
    from ._common import add_runtime_options

    p.add_argument("--denoise", action="store_true", help="denoise first (low-dose CT); the models read the result")
    p.add_argument("--threshold", type=float, default=None,
                   help="minimum score of a reported finding (default: the detector's operating point, "
                        "fitted for at most 1 false positive per validation scan; 0.5 where it has none)")
    p.add_argument("--max-findings", type=int, default=20)
    p.add_argument("--detector", default=DEFAULT_DETECTION_MODEL, help="detection model (name or path)")
    p.add_argument("--segmenter", default=DEFAULT_SEGMENTATION_MODEL, help="segmentation model (name or path)")
    add_runtime_options(p, quiet_help)


def check_screening_options(args) -> None:
    """What ``medai screen`` and ``medai batch`` check before reading a scan or loading a model."""
    from ..api import check_score_threshold, check_some_findings_listed
    from ._common import check_writable

    check_writable(args.out_dir, "--out-dir", folder=True)
    if args.threshold is not None:
        check_score_threshold(args.threshold, "--threshold")
    check_some_findings_listed(args.max_findings, "--max-findings")


def run(args) -> int:
    from ..io import read_volume
    from ..screening import check_out_dir, screen, screening_markdown, write_screening
    from ._common import check_not_labels, models_for_file, runtime

    check_screening_options(args)
    check_out_dir(args.input, args.out_dir)
    vol = read_volume(args.input)
    check_not_labels(vol, args.input, "screen")  # it read "looks like MR" (an audit helper)
    detector, segmenter = models_for_file(vol, args.input, args.detector, args.segmenter)  # MR file, CT models
    settings, progress = runtime(args)
    result = screen(vol.data, vol.spacing, vol.affine, denoise=args.denoise, detector=detector,
                    segmenter=segmenter, score_threshold=args.threshold, max_findings=args.max_findings,
                    settings=settings, progress=progress)
    source = Path(args.input).name
    write_screening(result, vol, source, args.out_dir)
    print(screening_markdown(result, source))
    print(f"report written to {Path(args.out_dir)}/report.md (also report.json, findings.csv, segmentation.nii.gz"
          f"{', key_images/' if result.findings else ''})")
    return 0

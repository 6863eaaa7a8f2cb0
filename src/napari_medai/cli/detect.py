"""``medai detect IN --out findings.json|.csv``: lesion findings with size and Lung-RADS category."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    from ._common import add_runtime_options

    p = sub.add_parser("detect", help="detect lesions (default: lung nodules in chest CT)")
    p.add_argument("input", help="NIfTI file or DICOM folder")
    p.add_argument("--out", required=True, help="findings file: .json or .csv (a .md summary is written beside it; a .md there that is no "
                   "earlier summary is refused)")
    p.add_argument("--model", default="lung-nodule-detection", help="built-in name or model path")
    p.add_argument("--threshold", type=float, default=0.0, help="minimum score of a finding")
    p.add_argument("--max-findings", type=int, default=50, help="at most this many findings, 1 or more (default 50)")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import check_score_threshold, check_some_findings_listed, cut_to, detect, one_more_than
    from ..inference.modality import check_stated_modality
    from ..io import read_volume
    from ..io.atomic import all_or_nothing, write_text_atomic
    from ..models import load_model
    from ..models.card import operating_threshold
    from ..postprocess.report import file_grid, findings_markdown, findings_to_csv, findings_to_json
    from ._common import check_findings_out, check_not_labels, check_writable, runtime

    out = Path(args.out)
    check_findings_out(out)
    check_writable(out, "--out")
    summary_path = out.with_suffix(".md")
    check_writable(summary_path, "the summary beside --out")
    check_own_summary(summary_path)
    check_score_threshold(args.threshold, "--threshold")
    # a negative or fractional cap, in the API's words; 0 would run the detector to list nothing
    check_some_findings_listed(args.max_findings, "--max-findings")
    vol = read_volume(args.input)
    check_not_labels(vol, args.input, "detect")
    settings, progress = runtime(args)
    model = load_model(args.model)
    check_stated_modality(vol.modality, [model.card], vol.data, args.input)  # a file that says MR, a CT model
    findings = detect(vol.data, vol.spacing, model=model, affine=vol.affine, score_threshold=args.threshold,
                      max_findings=one_more_than(args.max_findings), settings=settings, progress=progress)
    findings, capped = cut_to(findings, args.max_findings)  # the summary then says the list was cut
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = file_grid(vol.data.shape, vol.metadata)  # center_file_voxel: the index in the file's own voxel order
    summary = findings_markdown(findings, source=Path(args.input).name, model=str(args.model),
                                shape=vol.data.shape, operating_point=operating_threshold(model.card),
                                fp_per_scan=model.card.extra.get("operating_point", {}).get("fp_per_scan", 1.0))
    if capped:  # the unlisted ones, with lower scores, could be larger than every listed one
        summary += (f"\nNote: more findings scored {args.threshold:g} or more than the {args.max_findings} listed "
                    "(--max-findings); raise it to list them.\n")
    with all_or_nothing():  # both or neither: a full disk at the summary left the new list beside an earlier one
        write_text_atomic(out, findings_to_json(findings, grid=grid) if out.suffix.lower() == ".json"
                          else findings_to_csv(findings, grid=grid))
        write_text_atomic(summary_path, summary)
    print(summary)
    print(f"{len(findings)} finding(s) written to {out} (summary: {summary_path})")
    return 0


def check_own_summary(path) -> None:
    """The .md beside ``--out`` is written without being named: refuse to replace a file there
    that is not an earlier summary of this command (a reader's notes.md beside notes.json, or a
    screening's report.md beside report.json, was silently replaced)."""
    from ..errors import InputError
    from ..postprocess.report import SUMMARY_TITLE

    path = Path(path)
    if not path.is_file():
        return
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        first = ""
    if not first.startswith(SUMMARY_TITLE):
        raise InputError(f"{path} exists and is not a summary medai detect wrote, and the summary written beside "
                         "--out would replace it; choose another --out name or move that file")

"""``medai detect IN --out findings.json|.csv``: lesion findings with size and Lung-RADS category."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    from ._common import add_runtime_options

    p = sub.add_parser("detect", help="detect lesions (default: lung nodules in chest CT)")
    p.add_argument("input", help="NIfTI file or DICOM folder")
    p.add_argument("--out", required=True, help="findings file: .json or .csv (a .md summary is written beside it)")
    p.add_argument("--model", default="lung-nodule-detection", help="built-in name or model path")
    p.add_argument("--threshold", type=float, default=0.0, help="minimum score of a finding")
    p.add_argument("--max-findings", type=int, default=50)
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import check_score_threshold, detect
    from ..errors import InputError
    from ..io import read_volume
    from ..models import load_model
    from ..models.card import operating_threshold
    from ..postprocess.report import findings_markdown, findings_to_csv, findings_to_json
    from ._common import check_writable, runtime

    out = Path(args.out)
    if out.suffix.lower() not in (".json", ".csv"):
        raise InputError(f"--out must end in .json or .csv, got {out.name}")
    check_writable(out, "--out")
    check_score_threshold(args.threshold, "--threshold")
    vol = read_volume(args.input)
    settings, progress = runtime(args)
    model = load_model(args.model)
    findings = detect(vol.data, vol.spacing, model=model, affine=vol.affine, score_threshold=args.threshold,
                      max_findings=args.max_findings, settings=settings, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(findings_to_json(findings) if out.suffix.lower() == ".json" else findings_to_csv(findings))
    summary = findings_markdown(findings, source=Path(args.input).name, model=str(args.model),
                                n_slices=vol.data.shape[0], operating_point=operating_threshold(model.card),
                                fp_per_scan=model.card.extra.get("operating_point", {}).get("fp_per_scan", 1.0))
    out.with_suffix(".md").write_text(summary)
    print(summary)
    print(f"{len(findings)} finding(s) written to {out} (summary: {out.with_suffix('.md')})")
    return 0

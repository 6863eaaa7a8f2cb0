"""Screening a cohort: every chest CT among some files and folders, with dask.

``screen_cases`` runs :func:`napari_medai.screening.screen` on each case and writes that case's
report files into its own folder (``write_screening``: report.md/.json, findings.csv,
segmentation.nii.gz, key images), then one ``cohort.csv`` with a row per case.  The models are loaded once
and shared; the cases run as ``dask.delayed`` tasks on a thread pool of ``workers`` threads
(torch releases the GIL in its kernels).  Two workers let one case's reading and
single-threaded post-processing overlap another's network run: on the 2-core CPU five cases
took 74 s with two workers against 94 s with one, peaking at 2.1 GB against 1.6 GB
(``benchmarks/bench_batch.py``).  Each running case holds its volume and class probabilities
(about 2.5 GB for a 512 x 512 x 300 CT), so one worker is the default.  A case that cannot be
read or screened (a corrupt file, an MR volume, absurd spacing) is recorded with its message
in ``cohort.csv`` and the others go on.  A label map among the files (``medai phantom`` writes
``<case>_label.nii.gz`` beside each CT) is recognised by the reader (NIfTI intent or its
integer values, ``io.nifti``) and recorded as skipped, not screened.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .api import DEFAULT_DETECTION_MODEL, DEFAULT_SEGMENTATION_MODEL
from .errors import Cancelled, InputError, MedaiError, reason_of
from .io.atomic import as_written, write_text_atomic

COHORT_FILE = "cohort.csv"


@dataclass
class CaseRecord:
    """One row of ``cohort.csv``: what screening found in one case, or why it could not run."""

    case: str
    source: str
    status: str  # "ok", "error", "skipped" (a label map, not a CT), or "running" (started, not finished)
    message: str = ""  # the error, why it was skipped, or the report's notes
    score_threshold: float | None = None  # findings reported from this score up
    findings: int | None = None
    highest_category: str = ""
    category_by_attenuation: str = ""  # the same with each finding's attenuation read from the CT
    largest_finding_mm: float | None = None  # long axis of the largest reported finding
    right_lung_ml: float | None = None
    left_lung_ml: float | None = None
    nodule_segmented_ml: float | None = None  # the segmentation's nodule class, whole scan
    seconds: float | None = None


def find_cases(inputs, on_note: Callable[[str], None] | None = None) -> list[tuple[str, Path]]:
    """(case name, path) for each input: a NIfTI file, a folder holding one DICOM series, or a
    folder of cases (its NIfTI files and its sub-folders that hold a DICOM series, one level
    down).  A file found twice (given, and in a folder given) is one case.  Names are file names
    without .nii/.nii.gz, or folder names (``.`` is named by the folder it stands for), their bytes
    that are not UTF-8 read as Latin-1 (``_readable``); a repeated name gets ``_2``, ``_3``…
    (``screen_cases`` keeps the names an earlier run into the same folder gave its sources).
    Sub-folders of a folder of cases that hold NIfTI files (a folder per patient) are not
    searched: ``on_note`` (default: a warning) names them, since they were left out without a
    word.  Raises InputError for a missing path or when no case is found."""
    from .io import is_supported_path
    from .io.nifti import is_nifti_path, nifti_stem

    found = []
    for item in map(Path, inputs):
        if not item.exists():
            raise InputError(f"{item} does not exist")
        if is_nifti_path(item) or (item.is_dir() and is_supported_path(item)):
            found.append(item)  # a case itself
        elif item.is_dir():
            # hidden entries are no cases: a cohort copied from a Mac holds a "._scan.nii.gz"
            # resource-fork twin of every scan (as medai evaluate and the DICOM reader skip them)
            entries = [p for p in sorted(item.iterdir()) if not p.name.startswith(".")]
            found += [p for p in entries if is_nifti_path(p) or (p.is_dir() and is_supported_path(p))]
            # a report folder (its report.json) holds a screening's own NIfTI files, not a patient's
            nested = [p.name for p in entries if p.is_dir() and not is_supported_path(p)
                      and not (p / "report.json").is_file()
                      and any(is_nifti_path(f) and not f.name.startswith(".") for f in p.iterdir())]
            if nested:
                _note(on_note, f"{item}: the NIfTI files in {', '.join(nested[:5])}{' …' if len(nested) > 5 else ''} "
                               "(sub-folders) are not screened: give those folders as inputs too")
        else:
            raise InputError(f"{item.name} is neither a NIfTI file nor a folder of cases")
    if not found:
        raise InputError("no chest CT found: give NIfTI files, DICOM series folders, or folders holding them")
    first = {}
    for path in found:  # the first mention of each file, in the order given
        first.setdefault(path.resolve(), path)
    unique = list(first.values())
    cases, taken = [], set()
    for path in unique:
        # "." (a series folder run from inside it) had no name, and its report landed beside cohort.csv
        name = _free_name(nifti_stem(path) or path.resolve().name or "case", taken)
        taken.add(name)
        cases.append((name, path))
    return cases


def _note(on_note, text: str) -> None:
    if on_note is not None:
        on_note(text)
    else:
        import warnings

        warnings.warn(text, UserWarning, stacklevel=3)


def _readable(name: str) -> str:
    """``name`` as text that cohort.csv and any file system hold as it is: bytes of a file name
    that are not UTF-8 (Latin-1 ``caf\\xe9``, which Python gives as lone surrogates) read as
    Latin-1 (``café``).  The surrogate went into cohort.csv as the escape ``caf\\udce9``, which a
    re-run did not know as its case's name: it listed the case again (an audit helper's finding).
    Another lone surrogate (a Windows name's broken UTF-16) is U+FFFD."""
    import re

    def byte(match) -> str:
        code = ord(match.group())
        return chr(code - 0xDC00) if 0xDC80 <= code <= 0xDCFF else "\ufffd"

    return re.sub("[\ud800-\udfff]", byte, name)


def _free_name(stem: str, taken) -> str:
    """``stem``, or ``stem_2``, ``stem_3``… the first not in ``taken`` ("scan" twice beside a real
    "scan_2": the second becomes "scan_3") and not one of the run's own names: ``cohort.csv`` and
    any ``<case> (earlier run)`` (a scan so named had its folder removed by another case's move, or
    failed on the cohort file; found by an audit helper).  In either letter case, as ``_reserved``:
    "Scan" and "scan" are one report folder on a case-insensitive file system (macOS, Windows, an
    exFAT drive), where the second case's report replaced the first's under both rows."""
    stem = _readable(stem)  # every new name is readable text, whichever caller made it
    folded = {other.casefold() for other in taken}
    name, k = stem, 1
    while name.casefold() in folded or _reserved(name):
        k += 1
        name = f"{stem}_{k}"
    return name


def _reserved(name: str) -> bool:  # either letter case: a case-insensitive file system is one folder
    return name.lower() == COHORT_FILE.lower() or name.lower().endswith(EARLIER_RUN.format(name="").lower())


def keep_earlier_names(cases, earlier: list[dict]) -> list[tuple[str, Path]]:
    """``cases`` named as an earlier run into the same folder named their sources (``earlier``:
    its cohort rows), and the others given names no earlier row uses.  Names depend on which
    inputs are given: a re-run with ``b/scan.nii.gz`` only named it "scan", the name ``a/scan.nii.gz``
    had, and wrote its report over a's while the table listed b twice."""
    # an earlier run (before names were reserved) may have named a case "x (earlier run)": not kept
    before = {_source_key(row["source"]): row["case"] for row in earlier
              if row.get("source") and not _reserved(row["case"])}
    kept = {k: before[_source_key(path)] for k, (_, path) in enumerate(cases) if _source_key(path) in before}
    taken = {row["case"] for row in earlier} | set(kept.values())
    out = []
    for k, (name, path) in enumerate(cases):
        if k not in kept:
            kept[k] = _free_name(name, taken)
            taken.add(kept[k])
        out.append((kept[k], path))
    return out


def _source_key(source) -> str:
    """A source as cohort.csv holds it (a name that is not UTF-8 is escaped there), so that a
    path compares with a row read back."""
    return as_written(str(Path(source).resolve()))


def _rows_of_cases(earlier: list[dict], cases) -> list[dict]:
    """``earlier`` with each row whose source is one of ``cases`` given that case's name, so
    that the case's new row replaces it in its place.  A row whose name ``keep_earlier_names``
    does not keep (an older version's "x (earlier run)") stayed beside the new row: the table
    listed the scan twice."""
    names = {_source_key(path): name for name, path in cases}

    def named(row: dict) -> dict:
        name = names.get(_source_key(row["source"])) if row.get("source") else None
        return row if name is None else {**row, "case": name}

    return [named(row) for row in earlier]


def screen_cases(cases, out_dir, *, workers: int = 1, detector=DEFAULT_DETECTION_MODEL,
                 segmenter=DEFAULT_SEGMENTATION_MODEL, on_case: Callable[[CaseRecord, int, int], None] | None = None,
                 cancel=None, on_start: Callable[[int], None] | None = None, **screen_kwargs) -> list[CaseRecord]:
    """Screen each (name, path) of ``cases`` (``find_cases``) into ``out_dir/<name>/`` and write
    ``out_dir/cohort.csv`` (rewritten as each case ends, in the order of ``cases``, after the rows
    an earlier run there wrote for other cases); returns the records in the order of ``cases``.
    A ``cohort.csv`` there that no run wrote is refused (``InputError``) before any model loads.  ``screen_kwargs`` go
    to ``screen`` (``denoise``, ``score_threshold``, ``max_findings``, ``settings``).
    ``on_case(record, done, total)`` is called as each case finishes (from a worker thread);
    ``on_start(total)`` once the run's checks have passed and the models have loaded, before the
    first case (``medai batch`` prints the count of cases there, so a model that fails to load
    is not preceded by it).
    The device in ``settings`` is checked once, before any model loads or ``out_dir`` is made.
    A cancelled ``cancel`` (``inference.CancelToken``) stops the running cases between windows
    and starts no other; ``Cancelled`` is raised, and ``cohort.csv`` keeps the finished cases.
    Ctrl+C (KeyboardInterrupt) cancels the same way before it is raised."""
    import dask

    from .api import _model, check_score_threshold, check_some_findings_listed
    from .inference import InferenceSettings
    from .inference.cancel import as_cancel_token
    from .inference.device import select_device
    from .screening import REPORT_CAP_CONTEXT

    cancel = as_cancel_token(cancel)

    if workers < 1:
        raise InputError(f"workers must be 1 or more, got {workers}")
    # the run's mistakes, before any model loads (else every case would fail with them)
    if screen_kwargs.get("score_threshold") is not None:
        check_score_threshold(screen_kwargs["score_threshold"])
    check_some_findings_listed(screen_kwargs.get("max_findings", 20), context=REPORT_CAP_CONTEXT)  # screen()'s check
    if screen_kwargs.get("settings") is not None:  # a device this machine lacks, or a bad setting, failed every case
        settings = InferenceSettings.of(screen_kwargs["settings"])
        settings.validate()
        select_device(settings.device)
    out = Path(out_dir)
    # loaded once: every task shares the same networks (inference only, no state changes)
    earlier = earlier_cohort_rows(out / COHORT_FILE)  # refuses a table that is not ours, before any model loads
    cases = keep_earlier_names(list(cases), earlier)
    earlier = _rows_of_cases(earlier, cases)
    det, seg = _model(detector, "detection"), _model(segmenter, "segmentation")
    out.mkdir(parents=True, exist_ok=True)  # after the models: one that does not load leaves no empty folder
    if on_start is not None:
        on_start(len(cases))
    lock, rows, finished = threading.Lock(), {}, set()
    order = {name: k for k, (name, _) in enumerate(cases)}

    def table(name: str, record: CaseRecord | None) -> None:
        """Under the lock: the case's row set (None: dropped, its earlier run's row back), the whole
        table replaced in one step."""
        if record is None:
            rows.pop(name, None)
        else:
            rows[name] = record
        write_text_atomic(out / COHORT_FILE, cohort_csv(sorted(rows.values(), key=lambda r: order[r.case]), earlier))

    def one(name: str, path: Path) -> CaseRecord:
        cancel.raise_if_cancelled()  # a stopped run starts no other case
        with lock:  # an earlier run's "ok" row must not stand while this run rewrites the case's files
            table(name, CaseRecord(name, str(path.resolve()), "running", "started; not finished"))
        try:
            record = _screen_one(name, path, out / name, det, seg, {**screen_kwargs, "cancel": cancel})
        except BaseException:  # cancelled (Cancel, Ctrl+C) before writing: the earlier row comes back
            with lock:
                table(name, None)
            raise
        with lock:
            finished.add(name)
            # rewritten as each case ends: a run stopped halfway keeps the table of what it did
            table(name, record)
            if on_case is not None:
                on_case(record, len(finished), len(cases))
        return record

    tasks = [dask.delayed(one)(name, path) for name, path in cases]
    try:
        return list(dask.compute(*tasks, scheduler="threads", num_workers=workers))
    except KeyboardInterrupt:  # the running cases stop at their next window instead of finishing
        cancel.cancel()
        raise


def _screen_one(name: str, path: Path, case_dir: Path, det, seg, screen_kwargs) -> CaseRecord:
    from .io import read_volume
    from .screening import check_out_dir, screen, write_screening

    t0 = time.perf_counter()
    source = str(path.resolve())  # what the next run into this folder matches its inputs by
    try:
        check_out_dir(path, case_dir)  # before the models run on it
    except (MedaiError, OSError) as exc:  # the folder holds what is not ours: it is left as it is
        return CaseRecord(name, source, "error", str(exc), seconds=round(time.perf_counter() - t0, 1))
    try:
        volume = read_volume(path)
        if volume.is_labels:  # a phantom's or a reader's mask beside the CTs: nothing to screen
            return _set_aside(case_dir, CaseRecord(name, source, "skipped", "a label map, not a CT",
                                                   seconds=round(time.perf_counter() - t0, 1)))
        if volume.modality == "MR":  # a file that says MR is not run through CT models (medai screen's rule)
            from .inference.modality import check_stated_modality

            check_stated_modality(volume.modality, (det.card, seg.card), volume.data, path.name)
        result = screen(volume.data, volume.spacing, volume.affine, detector=det, segmenter=seg, **screen_kwargs)
        write_screening(result, volume, path.name, case_dir)
    except Cancelled:
        raise
    except (MedaiError, OSError) as exc:  # this case's problem: say it, go on with the others
        return _set_aside(case_dir, CaseRecord(name, source, "error", str(exc),
                                               seconds=round(time.perf_counter() - t0, 1)))
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure on one scan must not stop the cohort
        reason = f"unexpected {type(exc).__name__}: {reason_of(exc)}"
        return _set_aside(case_dir, CaseRecord(name, source, "error", reason, seconds=round(time.perf_counter() - t0, 1)))
    lungs = result.lung_volumes_ml
    # the operating point's explanation is the same for every case: its column says it instead
    notes = result.notes[1:] if result.at_operating_point else result.notes
    return CaseRecord(
        name, source, "ok", "; ".join(notes), score_threshold=result.score_threshold,
        findings=len(result.findings),
        highest_category=result.category, category_by_attenuation=result.category_by_attenuation,
        largest_finding_mm=max((s.finding.diameter_mm for s in result.findings), default=None),
        right_lung_ml=_round(lungs.get("right")), left_lung_ml=_round(lungs.get("left")),
        nodule_segmented_ml=_round(_class_ml(result, "nodule"), 3),
        seconds=round(time.perf_counter() - t0, 1))


EARLIER_RUN = "{name} (earlier run)"  # where a case's earlier report goes when this run could not replace it


def _set_aside(case_dir: Path, record: CaseRecord) -> CaseRecord:
    """A case that ended without a report (error, skipped) after its folder passed
    ``check_out_dir``: the earlier run's report files there (those its report.json claims) move
    to ``<case> (earlier run)/``, replacing what an earlier move put there, so the folder no longer
    passes for this run's result; the record says where they went.  Nothing else in the folder
    moves (the scan itself may sit there)."""
    import shutil

    from .screening import finished_report_files

    # a report an earlier version left unfinished says so itself (its note), and is no finished run's
    claimed = [name for name in finished_report_files(case_dir) if (case_dir / name).is_file()]
    if not claimed:
        return record
    aside = case_dir.with_name(EARLIER_RUN.format(name=case_dir.name))
    if aside.exists():
        if not (aside / "report.json").is_file():  # not a folder this function made: leave both alone
            return record
        shutil.rmtree(aside)
    for name in dict.fromkeys([*claimed, "report.json"]):  # report.json may claim itself
        (aside / name).parent.mkdir(parents=True, exist_ok=True)
        (case_dir / name).rename(aside / name)
    for folder in {(case_dir / name).parent for name in claimed} - {case_dir}:  # key_images/, emptied
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    record.message = f"{record.message} (the earlier run's report was moved to '{aside.name}')"
    return record


def _class_ml(result, name: str) -> float | None:
    """Volume (mL) of the segmentation's class ``name`` over the whole scan, as the segmentation
    measured it; None without that class."""
    return next((row["volume_ml"] for row in result.class_volumes if str(row["name"]).lower() == name), None)


def _round(value, digits: int = 1):
    return None if value is None else round(float(value), digits)


def cohort_csv(records, earlier: list[dict] = ()) -> str:
    """``cohort.csv``: one row per case, empty cells where a value does not apply.  ``earlier``
    (``earlier_cohort_rows``) are an earlier run's rows: each case's first keeps its place unless
    ``records`` holds its case again, and the rest of ``records`` follow in their order."""
    buffer = io.StringIO()
    fields = list(CaseRecord.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    new = {r.case: {k: ("" if v is None else v) for k, v in asdict(r).items()} for r in records}
    # a case's first row only: a table that re-runs on a name that was not UTF-8 wrote listed it twice
    first = {row["case"]: row for row in reversed(earlier)}
    rows = [new.pop(row["case"], row) for row in earlier if first[row["case"]] is row]
    for row in rows + list(new.values()):
        writer.writerow(row)
    return buffer.getvalue()


COHORT_KEY_FIELDS = ("case", "source", "status", "message")  # how every version's table begins


def earlier_cohort_rows(path) -> list[dict]:
    """The rows of an earlier run's ``cohort.csv`` at ``path`` ([] when there is none), so that a
    run on some of a folder's cases keeps the other cases' rows, whose report folders stay.
    Raises InputError for a file there that no ``medai batch`` wrote (another header), which a
    run would otherwise replace: a researcher's own table of the cohort is often named so."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = tuple(reader.fieldnames or ())
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} cannot be read as an earlier run's cohort table ({reason_of(exc)}), and this "
                         "run would replace it; move it elsewhere or choose another --out-dir") from exc
    known = set(CaseRecord.__dataclass_fields__)
    if header[:len(COHORT_KEY_FIELDS)] != COHORT_KEY_FIELDS or not set(header) <= known:
        raise InputError(f"{path} is not a cohort table that medai batch wrote (its columns are "
                         f"{', '.join(header) or 'none'}), and this run would replace it; move it elsewhere "
                         "or choose another --out-dir")
    return [row for row in rows if row.get("case")]

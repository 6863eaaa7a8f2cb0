"""Build sample_data/ from the real scans in ../shared/data (a developer tool, run once).

* lung1 CT and its nodule mask: cropped in-plane to the body (all 48 slices, int16 HU,
  spacing unchanged); the affine's origin moves to the crop's first voxel, exactly.
* Colin27 T1: voxels and affine unchanged.
Each file gets a ``medai modality=.. kind=..`` header description (see io/nifti.py) and
gzip level 9, so the samples stay well under the 15 MB budget of the wheel.

Usage: python scripts/make_sample_data.py [--src ../shared/data] [--out sample_data]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

BODY_HU = -500  # skin/fat/muscle are above this, air and lung below
MARGIN_VOXELS = 6
BUDGET_MB = 15.0

COLIN27_LICENSE = """\
Colin27 T1 MR brain (colin27_t1.nii.gz)
=======================================

Image: "colin27", 27 T1-weighted scans of one subject (C.J. Holmes) registered and
averaged at the Montreal Neurological Institute.  Reference: Holmes CJ, Hoge R,
Collins L, Woods R, Toga AW, Evans AC. Enhancement of MR images using registration for
signal averaging. J Comput Assist Tomogr. 1998;22(2):324-333.

This copy comes from the Debian package mricron-data (templates/ch2.nii.gz), version
1.2.20211006+dfsg-4, converted to NIfTI-1 with its voxels and affine unchanged.  Debian's
copyright file for that package covers it as follows:

  Files: *
  Copyright: Copyright 2006-2010, Chris Rorden
  License: BSD-3-clause

License: BSD-3-clause (text as given in Debian's copyright file)

  Redistribution and use in source and binary forms, with or without
  modification, are permitted provided that the following conditions are met:

  Redistributions of source code must retain the above copyright notice, this
  list of conditions and the following disclaimer.

  Redistributions in binary form must reproduce the above copyright notice, this
  list of conditions and the following disclaimer in the documentation and/or
  other materials provided with the distribution.  Neither the names of the
  copyright owners nor the names of this project (MRIcron) may be used to
  endorse or promote products derived from this software without specific prior
  written permission.

  THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
  AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
  IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
  DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR CONTRIBUTORS BE LIABLE
  FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
  DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
  SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
  CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
  OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
  OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""


def body_box(hu: np.ndarray, keep: np.ndarray) -> tuple[slice, slice]:
    """In-plane (i, j) bounding box of the body over all slices, grown to contain ``keep``."""
    body = hu > BODY_HU
    # Open in-plane only, to cut the thin blanket/table lines touching the body.
    body = ndimage.binary_opening(body, structure=np.ones((5, 5, 1), bool))
    labels, n = ndimage.label(body)
    if n == 0:
        raise SystemExit("no body found in the CT")
    largest = 1 + int(np.argmax(ndimage.sum_labels(body, labels, range(1, n + 1))))
    mask = (labels == largest) | (keep > 0)
    box = []
    for axis in (0, 1):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        lo = max(0, int(idx[0]) - MARGIN_VOXELS)
        hi = min(hu.shape[axis], int(idx[-1]) + 1 + MARGIN_VOXELS)
        box.append(slice(lo, hi))
    return box[0], box[1]


def cropped_affine(affine: np.ndarray, i0: int, j0: int) -> np.ndarray:
    new = affine.copy()
    new[:3, 3] = affine[:3, :3] @ np.array([i0, j0, 0.0]) + affine[:3, 3]
    # The header stores float32: make sure the shifted origin is exactly representable.
    if not np.array_equal(new.astype(np.float32).astype(np.float64), new):
        raise SystemExit(f"cropped affine is not exact in float32:\n{new}")
    return new


def save(data: np.ndarray, affine: np.ndarray, like, path: Path, description: str) -> None:
    img = nib.Nifti1Image(data, affine, header=like.header.copy())
    img.header.set_data_dtype(data.dtype)
    img.set_sform(affine, code=int(like.header["sform_code"]) or 2)
    img.set_qform(affine, code=int(like.header["qform_code"]))
    img.header["descrip"] = description.encode()
    img.header["scl_slope"], img.header["scl_inter"] = np.nan, np.nan  # no scaling
    nib.save(img, str(path))
    back = nib.load(str(path))
    assert np.array_equal(np.asanyarray(back.dataobj), data), path
    assert back.get_data_dtype() == data.dtype, path
    assert np.array_equal(back.affine, affine), path
    print(f"wrote {path} {data.shape} {data.dtype} {path.stat().st_size / 1e6:.2f} MB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--src", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=root / "sample_data")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    nib.openers.Opener.default_compresslevel = 9  # smaller files; reading speed is the same

    ct_img = nib.load(str(args.src / "lung1_ct.nii.gz"))
    mask_img = nib.load(str(args.src / "lung1_nodule_mask.nii.gz"))
    hu = np.asanyarray(ct_img.dataobj)
    mask = np.asanyarray(mask_img.dataobj)
    assert hu.dtype == np.int16 and hu.shape == mask.shape
    assert np.array_equal(ct_img.affine, mask_img.affine)
    bi, bj = body_box(hu, mask)
    affine = cropped_affine(ct_img.affine, bi.start, bj.start)
    print(f"lung1 crop: i {bi.start}:{bi.stop}, j {bj.start}:{bj.stop} of {hu.shape[:2]}")
    assert mask[bi, bj].sum() == mask.sum(), "the crop cut the nodule"
    save(np.ascontiguousarray(hu[bi, bj]), affine, ct_img, args.out / "lung1_ct.nii.gz",
         "medai modality=CT kind=image")
    save(np.ascontiguousarray(mask[bi, bj]), affine, mask_img, args.out / "lung1_nodule_mask.nii.gz",
         "medai modality=CT kind=labels")

    colin = nib.load(str(args.src / "colin27_t1.nii.gz"))
    save(np.asanyarray(colin.dataobj), colin.affine, colin, args.out / "colin27_t1.nii.gz",
         "medai modality=MR kind=image")

    shutil.copyfile(args.src / "LICENSE-pyradiomics.txt", args.out / "LICENSE-pyradiomics.txt")
    (args.out / "LICENSE-colin27.txt").write_text(COLIN27_LICENSE)

    total = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file()) / 1e6
    print(f"sample_data total: {total:.2f} MB (budget {BUDGET_MB} MB)")
    return 0 if total < BUDGET_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())

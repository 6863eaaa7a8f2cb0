"""Training data for the denoising models (development time only: nothing here runs in the plugin).

* MR: clean real T1 slices (Colin27, the MNI152 2009a template inside nilearn's wheel) scaled by
  their volume's 99th percentile; Rician noise at a random level of 2-10 % of that percentile is
  added to each patch when it is drawn (magnitude of signal + complex Gaussian noise).
* CT: pairs (full dose, simulated low dose) in HU: real full-size CT slices from the
  ``pydicom-data`` package and slices of procedural phantoms, each with
  :func:`napari_medai.phantoms.simulate_low_dose` at photon counts drawn log-uniformly.
  ``lung1`` is never used: it is the real-CT test set.

Every batch is a pure function of ``(seed, step)`` so that a killed run resumes bit-exactly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import InputError

# CT intensities: HU mapped linearly (no clipping: the residual must be able to reach bone and air).
CT_HU_RANGE = (-1000.0, 1000.0)
# MR noise levels, fraction of the 99th percentile.
MR_NOISE_RANGE = (0.02, 0.10)
# Colin27 axial slices (index along the RAS z axis) kept out of training: the benchmark tunes the
# classical methods on TUNE and tests everything on TEST; GUARD keeps neighbours out as well.
COLIN_TUNE = (60, 66)
COLIN_TEST = (90, 110)
COLIN_GUARD = (55, 115)
# CT photon counts per ray for training pairs (3e6 ~ routine dose, see phantoms/lowdose.py).
CT_PHOTONS_RANGE = (3e4, 1e6)
# Real CT slices from pydicom-data (uncompressed ones; lung1 is not among them).
PYDICOM_DATA_CT = ("693_UNCR.dcm", "explicit_VR-UN.dcm")
PHANTOM_SEEDS = (101, 102, 103, 104)
REPO_ROOT = Path(__file__).resolve().parents[3]


def ct_normalise(hu):
    lo, hi = CT_HU_RANGE
    return (np.asarray(hu, dtype=np.float32) - lo) / (hi - lo)


def rician(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of (clean + complex Gaussian noise of std ``sigma`` per channel)."""
    real = clean + rng.normal(0.0, sigma, clean.shape)
    imag = rng.normal(0.0, sigma, clean.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def colin27_path() -> Path:
    for path in (REPO_ROOT / "sample_data" / "colin27_t1.nii.gz", REPO_ROOT.parent / "shared" / "data" / "colin27_t1.nii.gz"):
        if path.exists():
            return path
    raise InputError("Colin27 T1 not found in sample_data/ (or ../shared/data/)")


def mni152_path() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None:
        raise InputError("the MNI152 template comes with nilearn: pip install nilearn (training only)")
    path = Path(spec.origin).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not path.exists():
        raise InputError(f"MNI152 template not found at {path}")
    return path


def load_mr_axial(path) -> np.ndarray:
    """(z, y, x) float32 volume in RAS order scaled so that its 99th percentile is 1."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    vol = np.asarray(img.dataobj, dtype=np.float32).transpose(2, 1, 0)
    return vol / np.percentile(vol, 99)


def _foreground_slices(vol: np.ndarray, keep) -> list[np.ndarray]:
    """Axial slices whose index passes ``keep`` and that hold at least 10 % of tissue."""
    return [vol[z] for z in range(vol.shape[0]) if keep(z) and (vol[z] > 0.1).mean() > 0.10]


def mr_slices(split: str) -> list[np.ndarray]:
    """Clean normalised MR slices: 'train' (MNI152 + Colin27 outside the guard band), 'tune', 'test'."""
    colin = load_mr_axial(colin27_path())
    if split == "train":
        guard_lo, guard_hi = COLIN_GUARD
        mni = load_mr_axial(mni152_path())
        return _foreground_slices(colin, lambda z: not guard_lo <= z < guard_hi) + _foreground_slices(mni, lambda z: True)
    lo, hi = {"tune": COLIN_TUNE, "test": COLIN_TEST}[split]
    return [colin[z] for z in range(lo, hi)]


def _pydicom_data_ct() -> list[tuple[np.ndarray, float]]:
    """(HU slice clipped to air, pixel mm) for the real CT slices of pydicom-data."""
    import pydicom

    spec = importlib.util.find_spec("data_store")
    if spec is None:
        raise InputError("the real CT training slices come with pydicom-data: pip install pydicom-data (training only)")
    folder = Path(spec.origin).parent / "data"
    out = []
    for name in PYDICOM_DATA_CT:
        ds = pydicom.dcmread(folder / name)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        # Outside the scan field these files hold -3024 HU padding: that is air.
        out.append((np.clip(hu, -1024, 3071).astype(np.int16), float(ds.PixelSpacing[0])))
    return out


def _phantom_ct(seeds=PHANTOM_SEEDS, slices_per_volume: int = 4) -> list[tuple[np.ndarray, float]]:
    from ..phantoms import make_chest_ct

    out = []
    for seed in seeds:
        ph = make_chest_ct(seed, shape=(32, 256, 256), spacing=(5.0, 1.4, 1.4))
        hu = np.asarray(ph.hu)
        for z in np.linspace(4, hu.shape[0] - 5, slices_per_volume).astype(int):
            out.append((hu[z], 1.4))
    return out


def ct_pairs(seed: int = 0, realisations: int = 10, phantom_realisations: int = 3, progress=print):
    """List of (clean, noisy) normalised float32 slices; deterministic for a given seed."""
    from ..phantoms import simulate_low_dose

    rng = np.random.default_rng(seed)
    sources = [(hu, mm, realisations) for hu, mm in _pydicom_data_ct()]
    try:
        sources += [(hu, mm, phantom_realisations) for hu, mm in _phantom_ct()]
    except ImportError:
        progress("phantom generator not available: training on real CT slices only")
    pairs = []
    lo, hi = np.log(CT_PHOTONS_RANGE)
    for i, (hu, mm, count) in enumerate(sources):
        for _ in range(count):
            photons = float(np.exp(rng.uniform(lo, hi)))
            noisy = simulate_low_dose(hu, photons, seed=int(rng.integers(2**31)), spacing=(mm, mm))
            pairs.append((ct_normalise(hu), ct_normalise(noisy)))
        progress(f"CT pairs: source {i + 1}/{len(sources)} done")
    return pairs


def _augment(patches: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = [np.rot90(p, k) for p in patches]
    return [np.ascontiguousarray(p[:, ::-1] if flip else p) for p in out]


def _crop_origin(img: np.ndarray, size: int, rng: np.random.Generator, tissue: float) -> tuple[int, int]:
    """A random crop corner, preferring crops that hold tissue (up to 10 tries)."""
    ny, nx = img.shape
    for _ in range(10):
        y, x = int(rng.integers(ny - size + 1)), int(rng.integers(nx - size + 1))
        if (img[y : y + size, x : x + size] > tissue).mean() > 0.3:
            break
    return y, x


def mr_batch(slices, seed: int, step: int, batch: int, size: int):
    """(noisy, clean) arrays of shape (batch, 1, size, size) for one training step."""
    rng = np.random.default_rng([seed, step])
    noisy, clean = [], []
    for _ in range(batch):
        img = slices[int(rng.integers(len(slices)))]
        y, x = _crop_origin(img, size, rng, tissue=0.1)
        (patch,) = _augment([img[y : y + size, x : x + size]], rng)
        sigma = rng.uniform(*MR_NOISE_RANGE)
        clean.append(patch)
        noisy.append(rician(patch, sigma, rng))
    return np.stack(noisy)[:, None], np.stack(clean)[:, None].astype(np.float32)


def ct_batch(pairs, seed: int, step: int, batch: int, size: int):
    """(noisy, clean) arrays of shape (batch, 1, size, size) cropped from the CT pairs."""
    rng = np.random.default_rng([seed, step])
    noisy, clean = [], []
    body = ct_normalise(-500.0)
    for _ in range(batch):
        full, low = pairs[int(rng.integers(len(pairs)))]
        y, x = _crop_origin(full, size, rng, tissue=body)
        c, n = _augment([full[y : y + size, x : x + size], low[y : y + size, x : x + size]], rng)
        clean.append(c)
        noisy.append(n)
    return np.stack(noisy)[:, None], np.stack(clean)[:, None]

"""Training data for the denoising models (development time only: nothing here runs in the plugin).

* MR: clean real T1 volumes (Colin27, the MNI152 2009a template inside nilearn's wheel) scaled by
  their 99th percentile; stacks of a slice and its neighbours (2.5D) get Rician noise at a random
  level of 1-10 % of that percentile when drawn (magnitude of signal + complex Gaussian noise),
  and each patch carries a loss weight inversely proportional to its noise level.
* CT: pairs (full dose, simulated low dose) in HU: real full-size CT slices from the
  ``pydicom-data`` package, every slice of pyradiomics' ``lung2`` chest CT (:mod:`.real_ct`)
  and slices of procedural phantoms, each with
  :func:`napari_medai.phantoms.simulate_low_dose` at photon counts drawn log-uniformly.
  ``lung1`` is never used: it is the real-CT test set.

Every batch is a pure function of ``(seed, step)`` so that a killed run resumes bit-exactly.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from ..denoising import INPUT_FLOOR
from ..errors import InputError

# CT intensities: HU mapped linearly (no clipping: the residual must be able to reach bone and air).
CT_HU_RANGE = (-1000.0, 1000.0)
# MR noise levels, fraction of the 99th percentile, drawn log-uniformly.  Each patch's L1 loss is
# weighted by MR_REFERENCE_SIGMA / sigma: unweighted, the noisiest patches dominate the loss and
# the model learns to blur, which cost it up to 4 dB at 3 % noise (docs/denoising.md).
MR_NOISE_RANGE = (0.01, 0.10)
MR_REFERENCE_SIGMA = 0.05
# Share of MR patches drawn from Colin27 (one sharp subject) rather than the smooth MNI152 average.
MR_COLIN_SHARE = 0.8
# Colin27 axial slices (index along the RAS z axis) kept out of training: the benchmark tunes the
# classical methods on TUNE and tests everything on TEST; GUARD keeps neighbours out as well.
COLIN_TUNE = (60, 66)
COLIN_TEST = (90, 110)
COLIN_GUARD = (55, 115)
# MR model is 2.5D: the slice and MR_NEIGHBOURS on each side (training draws gaps of 1 or 2 slices).
MR_NEIGHBOURS = 1
MR_MAX_REACH = 2 * MR_NEIGHBOURS
# A 3D MR model trains on blocks of (patch // MR_3D_DEPTH_DIVISOR, patch, patch) voxels: half as
# deep as wide keeps a step affordable on a CPU while the block still spans 32 slices at patch 64.
MR_3D_DEPTH_DIVISOR = 2
# CT photon counts per ray for training pairs.  Measured on 512 x 512 chest slices at 0.7 mm:
# 2e5 adds only ~9 HU of noise, 2e4 ~28 HU (the benchmark's low dose), 5e3 ~55 HU.
CT_PHOTONS_RANGE = (5e3, 2e5)
# Real CT slices from pydicom-data (uncompressed ones; lung1 is not among them).
PYDICOM_DATA_CT = ("693_UNCR.dcm", "explicit_VR-UN.dcm")
PHANTOM_SEEDS = (101, 102, 103, 104)  # benchmark phantoms use seeds >= 9000
CT_REALISATIONS = (10, 5)  # low-dose realisations of each real slice, of each phantom slice
# pyradiomics' lung2 chest CT (61 slices at 5 mm): one realisation of every slice, real chest
# anatomy of the kind lung1 (the real-CT test) is.  The phantom slices get 5 realisations each so
# their noise-free targets keep ~40 % of the pairs: at 2 each (23 %) a 9000-step run gained 0.7 dB
# on lung1 but lost 1.0 dB against the noise-free phantom (docs/denoising.md).
LUNG2_REALISATIONS = 1
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
    """The repository's own copy of Colin27 (shipped with its licence): training never reads
    ../shared, which a fresh checkout does not have (it fell back there when the copy was missing)."""
    package = Path(__file__).resolve().parents[1] / "sample_data" / "colin27_t1.nii.gz"
    for path in (REPO_ROOT / "sample_data" / "colin27_t1.nii.gz", package):
        if path.exists():
            return path
    raise InputError("Colin27 T1 not found in the repository's sample_data/ (src/napari_medai/sample_data/)")


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


def _tissue_slices(vol: np.ndarray, keep) -> list[int]:
    """Axial indices that pass ``keep`` and hold at least 10 % of tissue."""
    return [z for z in range(vol.shape[0]) if keep(z) and (vol[z] > 0.1).mean() > 0.10]


class MRSource:
    """Clean normalised MR volumes and the axial slices that batches are drawn from.

    ``shares``: optional probability of drawing from each volume (then uniform over that
    volume's slices); None draws uniformly over all slices.
    """

    def __init__(self, volumes: list[np.ndarray], slices: list[tuple[int, int]], shares=None):
        self.volumes, self.slices = volumes, slices
        self.shares = None if shares is None else [float(s) for s in shares]
        self._by_volume = [[i for i, (v, _) in enumerate(slices) if v == k] for k in range(len(volumes))]

    def __len__(self):
        return len(self.slices)

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        if self.shares is None:
            return self.slices[int(rng.integers(len(self.slices)))]
        pool = self._by_volume[int(rng.choice(len(self.volumes), p=self.shares))]
        return self.slices[pool[int(rng.integers(len(pool)))]]


def mr_source(split: str, reach: int = MR_MAX_REACH, colin_share=MR_COLIN_SHARE) -> MRSource:
    """'train': MNI152 + Colin27 slices whose neighbours (within ``reach``) all lie outside the
    guard band, Colin27 drawn ``colin_share`` of the time (None: uniformly over all slices);
    'tune' / 'test': the Colin27 slabs kept out of training."""
    colin = load_mr_axial(colin27_path())
    if split == "train":
        guard_lo, guard_hi = COLIN_GUARD
        mni = load_mr_axial(mni152_path())
        inside = lambda vol: lambda z: reach <= z < vol.shape[0] - reach  # noqa: E731
        colin_z = _tissue_slices(colin, lambda z: inside(colin)(z) and not guard_lo - reach <= z < guard_hi + reach)
        mni_z = _tissue_slices(mni, inside(mni))
        return MRSource([colin, mni], [(0, z) for z in colin_z] + [(1, z) for z in mni_z],
                        shares=None if colin_share is None else (colin_share, 1 - colin_share))
    lo, hi = {"tune": COLIN_TUNE, "test": COLIN_TEST}[split]
    return MRSource([colin], [(0, z) for z in range(lo, hi)])


def mr_source_3d(depth: int, colin_share=MR_COLIN_SHARE) -> MRSource:
    """Training blocks for a 3D model: ``slices`` holds (volume, first slice) of every block of
    ``depth`` slices that lies wholly outside Colin27's guard band (MNI152: anywhere) and whose
    middle slice holds tissue; Colin27 is drawn ``colin_share`` of the time."""
    colin, mni = load_mr_axial(colin27_path()), load_mr_axial(mni152_path())
    guard_lo, guard_hi = COLIN_GUARD

    def starts(vol, outside):
        return [z0 for z0 in range(vol.shape[0] - depth + 1)
                if outside(z0) and (vol[z0 + depth // 2] > 0.1).mean() > 0.10]

    colin_z = starts(colin, lambda z0: z0 + depth <= guard_lo or z0 >= guard_hi)
    mni_z = starts(mni, lambda z0: True)
    if not colin_z or not mni_z:
        raise InputError(f"no training block of {depth} slices fits the MR volumes: use a smaller patch")
    return MRSource([colin, mni], [(0, z) for z in colin_z] + [(1, z) for z in mni_z],
                    shares=None if colin_share is None else (colin_share, 1 - colin_share))


def _clip_hu(hu: np.ndarray) -> np.ndarray:
    """Real CT clipped to what denoise() takes in (air) and the low-dose simulation's ceiling."""
    from ..phantoms.lowdose import HU_MAX

    return np.clip(hu, INPUT_FLOOR["CT"], HU_MAX)


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
        # Outside the scan field these files hold -3024 HU padding: that is air (denoise() clips
        # its input at the same floor).
        out.append((_clip_hu(hu).astype(np.int16), float(ds.PixelSpacing[0])))
    return out


def _phantom_ct(seeds=PHANTOM_SEEDS, z_indices=(2, 4, 6)) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(full dose with the phantom's routine noise, noise-free target, pixel mm) at 0.7 mm pixels,
    the in-plane size of clinical chest CT.  The low dose is simulated from the full dose (as for
    a real scan); the target is the noise-free image, a cleaner signal than a second noisy scan."""
    from ..phantoms import make_chest_ct

    out = []
    for seed in seeds:
        ph = make_chest_ct(seed, shape=(8, 512, 512), spacing=(5.0, 0.7, 0.7))
        hu, clean = np.asarray(ph.hu), np.asarray(ph.noise_free)
        out += [(hu[z], clean[z], 0.7) for z in z_indices]
    return out


def ct_pairs_recipe(seed: int) -> str:
    """What :func:`ct_pairs` makes for ``seed`` with its defaults (the training run's cache key)."""
    return json.dumps({"seed": seed, "real": PYDICOM_DATA_CT, "lung2": LUNG2_REALISATIONS, "phantoms": PHANTOM_SEEDS,
                       "realisations": CT_REALISATIONS, "photons": CT_PHOTONS_RANGE, "hu_range": CT_HU_RANGE,
                       "floor": INPUT_FLOOR["CT"]})


def _lung2_ct() -> list[tuple[np.ndarray, float]]:
    """(HU slice, pixel mm) for every axial slice of pyradiomics' lung2 chest CT."""
    from .real_ct import lung2_ct

    hu, spacing = lung2_ct()
    return [(_clip_hu(s), spacing[1]) for s in hu]


def ct_pairs(seed: int = 0, realisations: int = CT_REALISATIONS[0],
             phantom_realisations: int = CT_REALISATIONS[1], lung2_realisations: int = LUNG2_REALISATIONS,
             progress=print):
    """List of (clean, noisy) normalised float32 slices; deterministic for a given seed."""
    from ..phantoms import simulate_low_dose

    rng = np.random.default_rng(seed)
    # Real slices: the routine-dose scan is the target (its own noise is independent of the
    # simulated noise, so the L1 optimum is still the noise-free image).
    sources = [(hu, hu, mm, realisations) for hu, mm in _pydicom_data_ct()]
    if lung2_realisations:
        sources += [(hu, hu, mm, lung2_realisations) for hu, mm in _lung2_ct()]
    sources += [(hu, clean, mm, phantom_realisations) for hu, clean, mm in _phantom_ct()]
    pairs = []
    lo, hi = np.log(CT_PHOTONS_RANGE)
    for i, (hu, target, mm, count) in enumerate(sources):
        for _ in range(count):
            photons = float(np.exp(rng.uniform(lo, hi)))
            noisy = simulate_low_dose(hu, photons, seed=int(rng.integers(2**31)), spacing=(mm, mm))
            pairs.append((ct_normalise(target), ct_normalise(noisy)))
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


def mr_batch(source: MRSource, seed: int, step: int, batch: int, size: int, neighbours: int = MR_NEIGHBOURS,
             noise_range=MR_NOISE_RANGE, log_uniform: bool = True, reference_sigma=MR_REFERENCE_SIGMA):
    """(noisy (batch, 2k+1, size, size), clean centre (batch, 1, size, size), loss weights (batch,)).

    Each slice of the stack gets its own Rician noise at one level (drawn from ``noise_range``,
    log-uniformly or uniformly); the weight is ``reference_sigma / level`` (1 when None).
    Neighbours are 1 slice apart, or 2 (a quarter of the time) so the model also sees less
    similar neighbours.  The keywords exist so that benchmarks/denoising_recipes.py can rerun
    the earlier recipe (uniform 2-10 %, unweighted) beside this one.
    """
    rng = np.random.default_rng([seed, step])
    noisy, clean, weights = [], [], []
    for _ in range(batch):
        v, z = source.draw(rng)
        vol = source.volumes[v]
        gap = 2 if rng.random() < 0.25 else 1
        zs = np.clip(z + gap * np.arange(-neighbours, neighbours + 1), 0, vol.shape[0] - 1)
        y, x = _crop_origin(vol[z], size, rng, tissue=0.1)
        stack = _augment([vol[k, y : y + size, x : x + size] for k in zs], rng)
        sigma, weight = _noise_level(rng, noise_range, log_uniform, reference_sigma)
        clean.append(stack[neighbours][None])
        noisy.append(np.stack([rician(s, sigma, rng) for s in stack]))
        weights.append(weight)
    return np.stack(noisy), np.stack(clean).astype(np.float32), np.asarray(weights, np.float32)


def _noise_level(rng, noise_range, log_uniform: bool, reference_sigma) -> tuple[float, float]:
    """One Rician noise level drawn from ``noise_range`` (log-uniformly or uniformly) and its loss
    weight ``reference_sigma / level`` (1 when None): a patch's L1 scales with its noise, and the
    weight keeps the quiet patches, where the errors are small, from counting for nothing."""
    lo, hi = np.log(noise_range) if log_uniform else noise_range
    sigma = float(np.exp(rng.uniform(lo, hi))) if log_uniform else float(rng.uniform(lo, hi))
    return sigma, 1.0 if reference_sigma is None else reference_sigma / sigma


def ct_batch(pairs, seed: int, step: int, batch: int, size: int):
    """(noisy, clean) arrays of shape (batch, 1, size, size) cropped from the CT pairs, and loss
    weights (all 1: the benchmark's dose sits mid-range of the training doses)."""
    rng = np.random.default_rng([seed, step])
    noisy, clean = [], []
    body = ct_normalise(-500.0)
    for _ in range(batch):
        full, low = pairs[int(rng.integers(len(pairs)))]
        y, x = _crop_origin(full, size, rng, tissue=body)
        c, n = _augment([full[y : y + size, x : x + size], low[y : y + size, x : x + size]], rng)
        clean.append(c)
        noisy.append(n)
    return np.stack(noisy)[:, None], np.stack(clean)[:, None], np.ones(batch, np.float32)


def mr_batch_3d(source: MRSource, seed: int, step: int, batch: int, size: int, noise_range=MR_NOISE_RANGE,
                reference_sigma=MR_REFERENCE_SIGMA):
    """(noisy, clean) blocks of shape (batch, 1, size // MR_3D_DEPTH_DIVISOR, size, size) and loss
    weights (batch,): the 3D counterpart of :func:`mr_batch` (one Rician level per block, drawn
    log-uniformly, weight ``reference_sigma / level``, 1 when None; random in-plane rot90 and flips
    of z and x)."""
    rng = np.random.default_rng([seed, step])
    depth = size // MR_3D_DEPTH_DIVISOR
    noisy, clean, weights = [], [], []
    for _ in range(batch):
        v, z0 = source.draw(rng)
        vol = source.volumes[v]
        y, x = _crop_origin(vol[z0 + depth // 2], size, rng, tissue=0.1)
        block = vol[z0 : z0 + depth, y : y + size, x : x + size]
        block = np.rot90(block, int(rng.integers(4)), axes=(1, 2))
        if rng.random() < 0.5:
            block = block[::-1]
        if rng.random() < 0.5:
            block = block[:, :, ::-1]
        block = np.ascontiguousarray(block, dtype=np.float32)
        sigma, weight = _noise_level(rng, noise_range, True, reference_sigma)
        clean.append(block[None])
        noisy.append(rician(block, sigma, rng)[None])
        weights.append(weight)
    return np.stack(noisy), np.stack(clean), np.asarray(weights, np.float32)

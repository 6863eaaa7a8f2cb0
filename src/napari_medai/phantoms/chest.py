"""``make_chest_ct``: one procedural chest CT with its ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.validate import check_spacing
from ..io.volume import Volume
from . import acquisition as acq
from . import nodules as nod
from . import tissues as T
from .anatomy import add_lung_texture, paint_anatomy
from .layout import sample_layout, scan_origin_zeta
from .lowdose import HU_MAX, HU_MIN, simulate_low_dose
from .raster import Frame

MIN_SHAPE = (1, 32, 32)
MAX_NODULES = 20


@dataclass
class ChestPhantom:
    """A synthetic chest CT: image, labels, nodules and geometry.

    Arrays are (z, y, x).  World coordinates (``affine``, ``center_mm``) follow
    napari_medai.io.volume: millimetres in (S, P, L) order.
    """

    hu: np.ndarray  # int16, routine dose
    labels: np.ndarray  # uint8, see tissues.LABEL_NAMES
    nodules: list[dict]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    low_dose: np.ndarray | None = None  # int16, when low_dose_photons was given
    noise_free: np.ndarray | None = None  # int16: blurred anatomy before noise
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    label_names = T.LABEL_NAMES

    def _volume(self, data, **kw) -> Volume:
        meta = {"seed": self.seed, "phantom": self.info}
        return Volume(data, self.affine.copy(), modality="CT", metadata=meta, **kw)

    def to_volume(self) -> Volume:
        return self._volume(self.hu)

    def labels_volume(self) -> Volume:
        vol = self._volume(self.labels, is_labels=True)
        vol.metadata["label_names"] = dict(T.LABEL_NAMES)
        return vol

    def low_dose_volume(self) -> Volume | None:
        return None if self.low_dose is None else self._volume(self.low_dose)


def check_phantom_args(seed, shape, spacing, n_nodules, low_dose_photons):
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"the phantom seed must be an integer, got {seed!r}") from None
    if seed < 0:
        raise InputError(f"the phantom seed must be 0 or more, got {seed}")
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be three integers (z, y, x), got {shape!r}") from None
    if len(shape) != 3 or any(n < m for n, m in zip(shape, MIN_SHAPE)):
        raise InputError(f"shape must be three integers (z, y, x) of at least {MIN_SHAPE}, got {shape}")
    spacing = check_spacing(spacing)
    if n_nodules is not None:
        if not isinstance(n_nodules, (int, np.integer)) or not 0 <= n_nodules <= MAX_NODULES:
            raise InputError(f"n_nodules must be an integer from 0 to {MAX_NODULES}, got {n_nodules!r}")
        n_nodules = int(n_nodules)
    if low_dose_photons is not None:
        try:
            photons = float(low_dose_photons)
        except (TypeError, ValueError):
            photons = float("nan")
        if not photons >= 1:
            raise InputError(f"low_dose_photons must be at least 1 photon per ray, got {low_dose_photons!r}")
    return seed, shape, spacing, n_nodules


def _tissue_jitter(rng) -> dict[str, float]:
    """Per-scan HU of each tissue (scanner calibration and patient variation)."""
    return {
        "fat": rng.normal(T.HU["fat"], 8),
        "muscle": rng.normal(T.HU["muscle"], 6),
        "blood": rng.normal(T.HU["blood"], 4),
        "liver": rng.normal(T.HU["liver"], 6),
        "cortical": rng.uniform(800, 1100),
        "cancellous": rng.uniform(T.HU["cancellous_bone"] - 40, T.HU["cancellous_bone"] + 60),
        "lung": rng.uniform(T.HU["lung"] - 20, T.HU["lung"] + 15),
    }


def make_chest_ct(
    seed: int,
    shape=(128, 256, 256),
    spacing=(2.5, 0.8, 0.8),
    n_nodules: int | None = None,
    low_dose_photons: float | None = None,
    *,
    noise_std: float | None = None,
    psf_fwhm_mm: float | None = None,
    max_nodule_diameter_mm: float | None = None,
) -> ChestPhantom:
    """Generate one chest CT phantom, deterministic in ``seed``.

    ``shape`` and ``spacing`` are (z, y, x); the z spacing is also the slice thickness.
    ``n_nodules``: default 0-4 at random.  ``low_dose_photons``: also simulate a
    low-dose acquisition (see :func:`simulate_low_dose`).  ``noise_std`` (HU) and
    ``psf_fwhm_mm`` default to random routine-dose values (8-14 HU, 0.6-1.0 mm).
    ``max_nodule_diameter_mm``: draw nodule diameters up to this (default 30 mm), e.g. 8 for a
    training set rich in the small nodules that are hardest to learn.
    """
    max_diameter = nod.MAX_DIAMETER_MM if max_nodule_diameter_mm is None else float(max_nodule_diameter_mm)
    if not nod.MIN_DIAMETER_MM <= max_diameter <= nod.MAX_DIAMETER_MM:
        raise InputError(f"max_nodule_diameter_mm must lie in [{nod.MIN_DIAMETER_MM}, {nod.MAX_DIAMETER_MM}] mm, "
                         f"got {max_nodule_diameter_mm!r}")
    seed, shape, spacing, n_nodules = check_phantom_args(seed, shape, spacing, n_nodules, low_dose_photons)
    rng = np.random.default_rng(seed)
    fov = tuple(n * s for n, s in zip(shape, spacing))
    lay = sample_layout(rng, fov)
    jitter = _tissue_jitter(rng)
    bottom = scan_origin_zeta(lay, fov[0])
    yx_origin = (-(shape[1] - 1) / 2 * spacing[1], -(shape[2] - 1) / 2 * spacing[2])
    out_frame = Frame(shape, spacing, (bottom + spacing[0] / 2, *yx_origin))
    n_sub = acq.sub_slices(spacing[0])
    fine_dz = spacing[0] / n_sub
    fine = Frame((shape[0] * n_sub, *shape[1:]), (fine_dz, *spacing[1:]), (bottom + fine_dz / 2, *yx_origin))

    label_f, hu_f, vessels = paint_anatomy(fine, lay, rng, jitter)
    hu = acq.average_slabs(hu_f, n_sub)
    labels = acq.central_labels(label_f, n_sub)
    del hu_f, label_f
    add_lung_texture(out_frame, lay, rng, labels, hu)

    nodules = _add_nodules(rng, lay, vessels, out_frame, labels, hu, n_nodules, max_diameter)

    fwhm = float(psf_fwhm_mm) if psf_fwhm_mm is not None else float(rng.uniform(0.6, 1.0))
    sigma = float(noise_std) if noise_std is not None else float(rng.uniform(8.0, 14.0))
    blurred = acq.psf_blur(hu, spacing, fwhm)
    noisy = blurred + acq.fbp_noise(shape, rng, sigma) if sigma > 0 else blurred
    low = None
    if low_dose_photons is not None:
        low = simulate_low_dose(blurred, float(low_dose_photons), seed=int(rng.integers(2**31)), spacing=spacing)
        low = _to_int16(low)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = out_frame.origin
    info = {"psf_fwhm_mm": fwhm, "noise_std_hu": sigma, "sub_slices": n_sub,
            "body_scale": lay.scale, "low_dose_photons": low_dose_photons}
    return ChestPhantom(
        hu=_to_int16(noisy), labels=labels, nodules=nodules, spacing=spacing, affine=affine,
        low_dose=low, noise_free=_to_int16(blurred), seed=seed, info=info,
    )


def _to_int16(hu) -> np.ndarray:
    return np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)


def _add_nodules(rng, lay, vessels, frame: Frame, labels, hu, n_nodules, max_diameter) -> list[dict]:
    if n_nodules is None:
        n_nodules = int(rng.integers(0, 5))
    voxel_mm3 = float(np.prod(frame.spacing))
    # The smallest nodule still spans MIN_VOXELS voxels, so its labelled volume is exact to 15 %.
    min_diameter = (6.0 * nod.MIN_VOXELS * voxel_mm3 / np.pi) ** (1 / 3)
    zeta_range = (frame.origin[0], frame.origin[0] + (frame.shape[0] - 1) * frame.spacing[0])
    taken, found = [], []
    for _ in range(n_nodules):
        spec = nod.random_spec(rng, min_diameter, max_diameter)
        wanted = str(rng.choice(nod.LOCATIONS, p=[0.45, 0.3, 0.25]))
        placed = nod.place(spec, wanted, lay, rng, vessels, zeta_range, taken)
        if not placed and wanted != "isolated":
            placed = nod.place(spec, "isolated", lay, rng, vessels, zeta_range, taken)
        if not placed:
            continue  # no room (e.g. a thin slab through small lungs)
        stats = nod.insert(spec, frame, labels, hu, rng)
        taken.append((spec.center, spec.reach))
        volume_mm3 = stats["voxels"] * voxel_mm3
        found.append({
            "center_voxel": [round(float(v), 3) for v in frame.to_index(spec.center)],
            "center_mm": [round(float(v), 3) for v in spec.center],
            "diameter_mm": round(2 * spec.radius, 3),
            "equivalent_diameter_mm": round((6 * volume_mm3 / np.pi) ** (1 / 3), 3),
            "volume_ml": round(volume_mm3 / 1000.0, 6),
            "label_voxels": stats["labelled_voxels"],
            "type": spec.type,
            # the solid part's diameter: all of a solid nodule, the core of a part-solid one
            "solid_diameter_mm": round(2 * spec.radius * min(spec.core_fraction, 1.0), 3),
            "shape": spec.shape,
            "location": spec.location,
        })
    return found

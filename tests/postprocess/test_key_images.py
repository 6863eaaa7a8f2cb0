"""Key images: the whole slice with the finding ringed beside a magnified field with its outline."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imread

from napari_medai.postprocess.findings import Finding
from napari_medai.errors import Cancelled
from napari_medai.inference.cancel import CancelToken
from napari_medai.postprocess.key_images import (
    BAR, BOX, GAP_PX, RING, key_image, key_image_pngs, save_key_images, write_key_images,
)

SPACING = (2.0, 0.8, 0.8)


def _ball_finding(volume, centre, radius_mm, spacing=SPACING, pad=2):
    """Paint a +40 HU ball into ``volume`` and return a Finding whose mask is that ball."""
    zz, yy, xx = np.indices(volume.shape)
    ball = (((zz - centre[0]) * spacing[0]) ** 2 + ((yy - centre[1]) * spacing[1]) ** 2
            + ((xx - centre[2]) * spacing[2]) ** 2) <= radius_mm ** 2
    volume[ball] = 40.0
    lo = np.maximum(np.argwhere(ball).min(0) - pad, 0)
    hi = np.argwhere(ball).max(0) + 1 + pad
    mask = ball[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return Finding(center_voxel=[float(c) for c in centre], center_mm=[0.0, 0.0, 0.0],
                   bbox_voxel=[lo.tolist(), hi.tolist()], diameter_mm=2 * radius_mm, short_axis_mm=2 * radius_mm,
                   mean_diameter_mm=2 * radius_mm, volume_ml=float(ball.sum() * np.prod(spacing) / 1000),
                   score=0.9, lung_rads="4A", label=1, mask=mask)


def _where(rgb, colour):
    return np.argwhere((rgb == colour).all(-1))


def test_the_ring_and_the_outline_sit_on_the_finding():
    volume = np.full((12, 100, 150), -850.0, np.float32)
    finding = _ball_finding(volume, (6, 40, 90), radius_mm=6.0)
    image = key_image(volume, SPACING, finding, fov_mm=40.0, height_px=200)
    # whole slice: 100 x 0.8 mm high in 200 px -> 0.4 mm a pixel, so 150 x 0.8 mm is 300 px wide
    assert image.dtype == np.uint8 and image.shape == (200, 300 + GAP_PX + 200, 3)
    overview, zoom = image[:, :300], image[:, 300 + GAP_PX:]
    ring = _where(overview, RING)
    centre_px = ((40 + 0.5) * 0.8 / 0.4 - 0.5, (90 + 0.5) * 0.8 / 0.4 - 0.5)
    distance = np.hypot(ring[:, 0] - centre_px[0], ring[:, 1] - centre_px[1])
    # the ring clears the nodule: radius 6 mm + 4 mm margin = 25 px, two pixels wide
    assert len(ring) > 100 and distance.min() >= 24.5 and distance.max() <= 27.5
    box = _where(overview, BOX)  # the magnified 40 mm field: 100 px around the centre
    assert box[:, 0].min() == round(centre_px[0] - 50) and box[:, 1].max() == round(centre_px[1] + 50)
    # magnified field: 40 mm in 200 px -> 0.2 mm a pixel; the outline lies on the 6 mm ball's edge
    edge = _where(zoom, RING)
    r = np.hypot(edge[:, 0] - 99.5, edge[:, 1] - 99.5) * 0.2
    assert len(edge) > 100 and 5.0 <= r.min() and r.max() <= 6.6
    bar = _where(zoom, BAR)
    assert bar[:, 1].max() - bar[:, 1].min() + 1 == 50  # 10 mm
    # the nodule is brighter than the lung around it in the lung window
    assert zoom[100, 100, 0] > zoom[20, 20, 0] + 50


def test_a_finding_at_the_scan_border_reads_air_outside_and_anisotropic_pixels_stay_square():
    volume = np.full((6, 60, 40), -850.0, np.float32)
    spacing = (2.0, 0.5, 1.0)  # 30 mm high, 40 mm wide
    finding = _ball_finding(volume, (3, 2, 38), radius_mm=1.5, spacing=spacing, pad=0)
    image = key_image(volume, spacing, finding, fov_mm=30.0, height_px=120)
    assert image.shape == (120, 160 + GAP_PX + 120, 3)
    zoom = image[:, 160 + GAP_PX:]
    assert (zoom[5, 5] == 0).all()  # beyond the scan's top edge: below the window, black
    assert len(_where(zoom, RING)) > 0  # the outline is drawn even where the mask meets the border


def test_no_outline_when_the_mask_misses_the_slice_and_bad_volumes_are_refused():
    volume = np.full((8, 50, 50), -850.0, np.float32)
    finding = _ball_finding(volume, (4, 25, 25), radius_mm=3.0)
    finding.center_voxel[0] = 7.4  # listed on slice 7, where the mask has no voxel
    zoom = key_image(volume, SPACING, finding, fov_mm=20.0, height_px=100)[:, 100 + GAP_PX:]
    assert len(_where(zoom, RING)) == 0
    with pytest.raises(ValueError, match="3D"):
        key_image(volume[0], SPACING, finding)


def test_write_key_images_saves_one_png_per_finding_in_rank_order(tmp_path):
    volume = np.full((10, 64, 64), -850.0, np.float32)
    first = _ball_finding(volume, (5, 20, 20), radius_mm=4.0)
    second = _ball_finding(volume, (5, 44, 44), radius_mm=2.0)
    names = write_key_images([first, second], volume, SPACING, tmp_path, folder="imgs", height_px=64)
    assert names == ["imgs/finding_01.png", "imgs/finding_02.png"]
    np.testing.assert_array_equal(imread(tmp_path / names[1]),
                                  key_image(volume, SPACING, second, height_px=64))
    assert write_key_images([], volume, SPACING, tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


def test_key_images_are_drawn_once_and_saved_as_drawn(tmp_path):
    # the widget draws them in its job and only writes the bytes when the report is saved
    volume = np.full((10, 64, 64), -850.0, np.float32)
    finding = _ball_finding(volume, (5, 30, 30), radius_mm=3.0)
    pngs = key_image_pngs([finding], volume, SPACING, height_px=64)
    assert len(pngs) == 1 and pngs[0][:8] == b"\x89PNG\r\n\x1a\n"
    names = save_key_images(pngs, tmp_path, folder="imgs")
    np.testing.assert_array_equal(imread(tmp_path / names[0]), key_image(volume, SPACING, finding, height_px=64))
    with pytest.raises(FileNotFoundError):  # the report's folder must exist already
        save_key_images(pngs, tmp_path / "missing", folder="imgs")
    assert not (tmp_path / "missing").exists()


def test_saving_again_with_fewer_findings_leaves_no_stale_image(tmp_path):
    png = b"\x89PNG\r\n\x1a\nnot drawn"
    assert len(save_key_images([png] * 3, tmp_path, folder="imgs")) == 3
    (tmp_path / "imgs" / "notes.txt").write_text("the user's own")
    assert save_key_images([png], tmp_path, folder="imgs") == ["imgs/finding_01.png"]
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == ["finding_01.png", "notes.txt"]
    assert save_key_images([], tmp_path, folder="imgs") == []
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == ["notes.txt"]


def test_drawing_key_images_stops_when_cancelled():
    volume = np.full((10, 64, 64), -850.0, np.float32)
    finding = _ball_finding(volume, (5, 30, 30), radius_mm=3.0)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        key_image_pngs([finding], volume, SPACING, cancel=token)


def test_a_key_image_that_cannot_be_written_whole_is_not_left_truncated(tmp_path, monkeypatch):
    # a full disk left finding_01.png cut short, linked from the report (found by an audit helper)
    from pathlib import Path

    from napari_medai.errors import InputError
    from napari_medai.postprocess.key_images import save_key_images

    (tmp_path / "key_images").mkdir()
    (tmp_path / "key_images" / "finding_01.png").write_bytes(b"the earlier image")
    real = Path.write_bytes

    def disk_full(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    try:
        save_key_images([b"\x89PNG" + b"x" * 100], tmp_path)
    except (OSError, InputError):
        pass
    monkeypatch.undo()
    assert (tmp_path / "key_images" / "finding_01.png").read_bytes() == b"the earlier image"
    assert [p.name for p in (tmp_path / "key_images").iterdir()] == ["finding_01.png"]  # no temporary left

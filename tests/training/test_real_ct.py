"""lung2 training CT: NRRD reading and the checked, cached pyradiomics archive (no network here)."""

import io
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

from napari_medai.errors import InputError
from napari_medai.models.registry import sha256_of
from napari_medai.training import real_ct

nrrd = pytest.importorskip("nrrd")


def _nrrd_bytes(data_xyz: np.ndarray, spacing_xyz, directions=None, space="left-posterior-superior") -> bytes:
    """A gzip NRRD file's bytes (pynrrd writes to a file name only)."""
    header = {"space": space, "encoding": "gzip",
              "space directions": (np.diag(spacing_xyz) if directions is None else np.asarray(directions)).tolist()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.nrrd"
        nrrd.write(str(path), data_xyz, header)
        return path.read_bytes()


def test_read_nrrd_volume_returns_zyx_and_spacing_in_that_order():
    data = np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2)  # NRRD axes x, y, z
    vol, spacing = real_ct.read_nrrd_volume(io.BytesIO(_nrrd_bytes(data, (0.6, 0.7, 5.0))))
    assert vol.shape == (2, 3, 4)
    assert spacing == pytest.approx((5.0, 0.7, 0.6))
    assert vol[1, 2, 3] == data[3, 2, 1]


@pytest.mark.parametrize("directions, space", [
    ([[0.6, 0, 0], [0, -0.7, 0], [0, 0, 5.0]], "left-posterior-superior"),  # y flipped
    ([[0.6, 0.1, 0], [-0.1, 0.6, 0], [0, 0, 5.0]], "left-posterior-superior"),  # oblique
    ([[0.6, 0, 0], [0, 0.7, 0], [0, 0, 5.0]], "right-anterior-superior"),
])
def test_read_nrrd_volume_refuses_other_orientations(directions, space):
    data = np.zeros((4, 3, 2), np.int16)
    with pytest.raises(InputError, match="reorient"):
        real_ct.read_nrrd_volume(io.BytesIO(_nrrd_bytes(data, None, directions, space)))


def test_read_nrrd_volume_takes_the_lps_abbreviation_and_refuses_an_unstated_space():
    data = np.zeros((4, 3, 2), np.int16)
    vol, spacing = real_ct.read_nrrd_volume(io.BytesIO(_nrrd_bytes(data, (0.6, 0.7, 5.0), space="LPS")))
    assert vol.shape == (2, 3, 4) and spacing == pytest.approx((5.0, 0.7, 0.6))
    with tempfile.TemporaryDirectory() as tmp:  # no space field, no directions: only spacings
        path = Path(tmp) / "v.nrrd"
        nrrd.write(str(path), data, {"spacings": [0.6, 0.7, 5.0]})
        raw = path.read_bytes()
    with pytest.raises(InputError, match="no space directions"):
        real_ct.read_nrrd_volume(io.BytesIO(raw))


def test_read_nrrd_volume_refuses_2d():
    with pytest.raises(InputError, match="3D"):
        real_ct.read_nrrd_volume(io.BytesIO(_nrrd_bytes(np.zeros((4, 3), np.int16), (0.6, 0.7))))


def test_missing_archive_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="missing"):
        real_ct.pyradiomics_sdist(tmp_path, download=False)


def test_archive_with_wrong_checksum_is_refused(tmp_path):
    (tmp_path / real_ct.PYRADIOMICS_SDIST).write_bytes(b"not the archive")
    with pytest.raises(InputError, match="sha256"):
        real_ct.pyradiomics_sdist(tmp_path, download=False)


def test_lung2_ct_reads_the_member_of_a_checked_archive(tmp_path, monkeypatch):
    data = (np.arange(4 * 3 * 2).reshape(4, 3, 2) - 1000).astype(np.int16)
    payload = _nrrd_bytes(data, (0.63, 0.63, 5.0))
    archive = tmp_path / real_ct.PYRADIOMICS_SDIST
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(real_ct.LUNG2_MEMBER)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    # the real archive's checksum is pinned; this stand-in's is accepted in its place
    monkeypatch.setattr(real_ct, "PYRADIOMICS_SHA256", sha256_of(archive))
    hu, spacing = real_ct.lung2_ct(tmp_path, download=False)
    assert hu.dtype == np.int16 and hu.shape == (2, 3, 4)
    assert spacing == pytest.approx((5.0, 0.63, 0.63))
    assert hu.min() == -1000


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_MEDAI_CACHE", str(tmp_path))
    assert real_ct.cache_dir() == tmp_path

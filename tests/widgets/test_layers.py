"""Layer helpers: input checks, outputs in the input's physical space, undoable label edits."""

from __future__ import annotations

from contextlib import suppress

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Labels, Points

from napari_medai.errors import InputError
from napari_medai.widgets._layers import (
    UNKNOWN_MODALITY,
    add_layers,
    edit_labels,
    geometry_kwargs,
    layer_spacing,
    layer_to_volume,
    layer_world_mm,
    output_layer_data,
)

SPACING = (2.5, 0.8, 0.8)


def oblique_affine() -> np.ndarray:
    """20° about z with 0.7 x 0.9 x 1.5 mm voxels and an origin: an oblique acquisition."""
    angle = np.deg2rad(20)
    rotation = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, 0.9, 0.7])
    affine[:3, 3] = (-100.0, 20.0, 35.0)
    return affine


def test_volume_and_spacing_come_from_the_layer(small_ct):
    data, spacing = layer_to_volume(Image(small_ct, scale=SPACING, translate=(1, 2, 3)))
    assert data is small_ct  # the layer's own array, no copy
    assert spacing == pytest.approx(SPACING)


def test_spacing_of_an_oblique_layer_is_read_from_its_affine(small_ct):
    _, spacing = layer_to_volume(Image(small_ct, affine=oblique_affine()))
    assert spacing == pytest.approx((1.5, 0.9, 0.7))


def test_multiscale_uses_the_full_resolution_level(small_ct):
    pyramid = [small_ct, small_ct[::2, ::2, ::2].copy()]
    data, spacing = layer_to_volume(Image(pyramid, multiscale=True, scale=SPACING))
    assert data is small_ct and spacing == pytest.approx(SPACING)


def _scale_zero(small_ct):
    layer = Image(small_ct)
    with suppress(np.linalg.LinAlgError):  # napari refuses to draw it, but keeps the value
        layer.scale = (0, 1, 1)
    return layer


@pytest.mark.parametrize(
    "make_layer, message",
    [
        (lambda ct: Labels((ct > 0).astype(np.uint8), name="mask"),
         "select an image layer: 'mask' is a Labels layer"),
        (lambda ct: Points([[1, 2, 3]], name="marks"), "select an image layer: 'marks' is a Points layer"),
        (lambda ct: Image(ct[0], name="slice"), "'slice' has 2 dimension(s) (24, 24); this needs a 3D volume"),
        (lambda ct: Image(np.zeros((4, 8, 8, 3), np.uint8), rgb=True, name="photo"),
         "'photo' is an RGB image; this needs a grayscale CT or MR volume"),
        (lambda ct: Image(np.full_like(ct, 7.0), name="flat"), "the image 'flat' is constant"),
        (lambda ct: Image(np.where(ct > 0, np.nan, ct), name="holes"), "NaN or infinite value"),
        (_scale_zero, "voxel spacing must be positive and finite, got (0.0, 1.0, 1.0)"),
        (lambda ct: Image(ct, scale=(1000, 1, 1), name="huge"), "the image geometry looks wrong"),
        (lambda ct: None, "no image selected"),
    ],
    ids=["labels", "points", "2d", "rgb", "constant", "nan", "scale-0", "absurd-scale", "none"],
)
def test_bad_input_is_an_input_error_naming_the_problem(small_ct, make_layer, message):
    with pytest.raises(InputError, match=_literal(message)):
        layer_to_volume(make_layer(small_ct))


@pytest.mark.parametrize(
    "scale, units",
    [
        ((2500.0, 800.0, 800.0), "um"),
        ((0.25, 0.08, 0.08), "cm"),
        ((2.5, 800.0, 800.0), ("mm", "micrometer", "µm")),  # mixed, each a length
        (SPACING, "pixel"),  # napari's default: read as mm, as always
        (SPACING, None),
    ],
    ids=["um", "cm", "mixed", "pixel", "default"],
)
def test_spacing_is_in_mm_whatever_length_unit_the_layer_is_in(small_ct, scale, units):
    _, spacing = layer_to_volume(Image(small_ct, scale=scale, units=units))
    assert spacing == pytest.approx(SPACING)


def test_a_layer_in_cm_is_placed_in_mm_translate_and_affine_included(small_ct):
    in_mm = oblique_affine()
    in_cm = in_mm.copy()
    in_cm[:3] /= 10.0  # the same geometry with every length in cm
    layer = Image(small_ct, affine=in_cm, units="cm")
    np.testing.assert_allclose(layer_world_mm(layer), in_mm, atol=1e-9)
    assert layer_spacing(layer) == pytest.approx((1.5, 0.9, 0.7))
    shifted = Image(small_ct, scale=(0.25, 0.08, 0.08), translate=(-3.0, 0.5, 0.7), units="cm")
    assert layer_world_mm(shifted)[:3, 3] == pytest.approx((-30.0, 5.0, 7.0))


def test_a_layer_with_a_time_axis_is_refused_naming_it(small_ct):
    layer = Image(small_ct, scale=SPACING, units=("s", "mm", "mm"), name="cine")
    with pytest.raises(InputError, match="^" + _literal("layer 'cine' has axis 0 in second, which is not a length")):
        layer_to_volume(layer)


def _literal(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize(
    "geometry",
    [
        {"scale": SPACING, "translate": (-30.0, 5.0, 7.0)},
        {"affine": oblique_affine()},
        {"scale": SPACING, "translate": (1, 2, 3), "rotate": 25, "affine": oblique_affine()},
    ],
    ids=["scale-translate", "oblique", "scale-rotate-and-affine"],
)
def test_outputs_land_in_the_inputs_physical_space(small_ct, geometry):
    space = {"sform_code": 4, "qform_code": 1, "affine_from": "both"}  # an MNI-space file
    source = Image(small_ct, name="ct", metadata={"modality": "CT", "nifti_affine": np.eye(4),
                                                  "nifti_orientation": "RAS", "nifti_space": space}, **geometry)
    data, meta, layer_type = output_layer_data(
        (small_ct > 0).astype(np.uint8), source, "segmentation", "labels"
    )
    output = Labels(data, **meta)
    assert output.name == "ct segmentation"
    np.testing.assert_allclose(output.scale, source.scale)
    np.testing.assert_allclose(output.translate, source.translate)
    np.testing.assert_allclose(output.affine.affine_matrix, source.affine.affine_matrix)
    voxels = np.array([[0, 0, 0], [11, 23, 23], [5, 7, 9]])
    # The decisive check: every voxel of the output sits where the input's voxel sits.
    np.testing.assert_allclose(
        [output.data_to_world(v) for v in voxels], [source.data_to_world(v) for v in voxels]
    )
    assert output.metadata["modality"] == "CT" and output.metadata["source_layer"] == "ct"
    assert output.metadata["nifti_orientation"] == "RAS"  # saved from napari: on the source file's grid
    assert output.metadata["nifti_space"] == space  # ... and in its space (sform/qform codes)


def test_an_output_in_other_units_gets_an_unknown_modality(small_ct):
    source = Image(small_ct, name="ct", metadata={"modality": "CT", "nifti_orientation": "LPS"})
    data, meta, _ = output_layer_data(np.zeros(small_ct.shape, np.float32), source, "lesion probability", "image",
                                      modality=UNKNOWN_MODALITY, metadata={"model": "m"})
    # not HU: saved from napari it must not reopen with the CT window or pass for a CT
    output = Image(data, **meta)  # modality is a metadata key, not a layer argument
    assert output.metadata["modality"] == "unknown"
    assert output.metadata["nifti_orientation"] == "LPS" and output.metadata["model"] == "m"  # the rest is kept


def test_an_output_off_the_input_grid_is_refused(small_ct):
    with pytest.raises(ValueError, match="not the input grid"):
        output_layer_data(np.zeros((3, 3, 3)), Image(small_ct), "segmentation", "labels")


def test_geometry_kwargs_copy_the_whole_transform(small_ct):
    source = Image(small_ct, scale=SPACING, translate=(1, 2, 3), rotate=15, shear=[0.1, 0, 0])
    copied = Image(small_ct, **geometry_kwargs(source))
    np.testing.assert_allclose(copied.rotate, source.rotate)
    np.testing.assert_allclose(copied.shear, source.shear)
    assert layer_spacing(copied) == pytest.approx(layer_spacing(source))


def test_new_layers_never_replace_a_users_layer(small_ct):
    viewer = ViewerModel()
    source = viewer.add_image(small_ct, name="ct")
    mine = viewer.add_labels(np.ones(small_ct.shape, np.uint8), name="ct segmentation")
    before = mine.data.copy()
    tuples = [output_layer_data(np.zeros(small_ct.shape, np.uint8), source, "segmentation", "labels")]
    (added,) = add_layers(viewer, tuples)
    assert added is not mine and added.name != "ct segmentation"  # napari suffixed the name
    assert [layer.name for layer in viewer.layers][:2] == ["ct", "ct segmentation"]
    np.testing.assert_array_equal(mine.data, before)


def test_a_bad_layer_tuple_adds_no_layer_at_all(small_ct):
    viewer = ViewerModel()
    source = viewer.add_image(small_ct, name="ct")
    good = output_layer_data(np.zeros(small_ct.shape, np.uint8), source, "segmentation", "labels")
    bad = (np.zeros(small_ct.shape), {"no_such_argument": 1}, "image")
    with pytest.raises(TypeError):
        add_layers(viewer, [good, bad])
    assert [layer.name for layer in viewer.layers] == ["ct"]


def test_label_edits_are_one_undo_step():
    labels = Labels(np.zeros((4, 6, 6), np.uint8))
    labels.data[0, 0, 0] = 5
    mask = np.zeros(labels.data.shape, bool)
    mask[1:3, 2:5, 2:5] = True
    mask[0, 0, 0] = True
    assert edit_labels(labels, mask, 2) == 19  # 18 new voxels + one relabelled
    assert (labels.data[mask] == 2).all()
    labels.undo()
    assert labels.data.sum() == 5 and labels.data[0, 0, 0] == 5  # everything back in one step
    labels.redo()
    assert (labels.data[mask] == 2).all()


def test_only_labels_layers_can_be_edited(small_ct):
    with pytest.raises(InputError, match="only a Labels layer can be edited"):
        edit_labels(Image(small_ct, name="ct"), small_ct > 0, 1)
    with pytest.raises(InputError, match="shape"):
        edit_labels(Labels(np.zeros((2, 2, 2), np.uint8)), np.ones((3, 3, 3), bool), 1)


def test_labels_whose_data_cannot_be_written_are_refused_unchanged():
    import dask.array as da

    frozen = np.zeros((2, 3, 3), np.uint8)
    frozen.setflags(write=False)  # as a memory-mapped file opened read-only
    for data, kind in ((frozen, "read-only"), (da.zeros((2, 3, 3), dtype=np.uint8, chunks=2), "a dask array")):
        labels = Labels(data, name="lazy")
        with pytest.raises(InputError, match=f"'lazy' cannot be edited here: its data is {kind}"):
            edit_labels(labels, np.ones((2, 3, 3), bool), 1)
        assert not np.asarray(labels.data).any()


def test_a_label_edit_may_cover_a_box_of_the_layer():
    labels = Labels(np.zeros((4, 6, 6), np.uint8))
    labels.data[2, 3, 3] = 7
    box = np.ones((2, 2, 2), bool)
    assert edit_labels(labels, box, 2, origin=(1, 2, 2)) == 8
    expected = np.zeros((4, 6, 6), np.uint8)
    expected[1:3, 2:4, 2:4] = 2
    np.testing.assert_array_equal(labels.data, expected)
    labels.undo()
    assert labels.data.sum() == 7 and labels.data[2, 3, 3] == 7
    for origin in ((3, 0, 0), (0, -1, 0)):  # past the far edge, before the near one
        with pytest.raises(InputError, match="does not fit"):
            edit_labels(labels, box, 2, origin=origin)
    assert labels.data.sum() == 7


class _StoreArray:
    """A zarr/tensorstore-like array (not numpy: fancy get and set), optionally read-only."""

    def __init__(self, a, read_only=False):
        self._a, self.read_only = a, read_only
        self.shape, self.dtype, self.ndim = a.shape, a.dtype, a.ndim

    def __getitem__(self, idx):
        return np.array(self._a[idx])

    def __setitem__(self, idx, value):
        if self.read_only:
            raise PermissionError("object is read-only")  # zarr: ReadOnlyError
        self._a[idx] = value

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._a, dtype=dtype)

    def __len__(self):
        return self.shape[0]


def _box_mask():
    mask = np.zeros((6, 8, 8), bool)
    mask[4, 2:5, 2:5] = True
    return mask


def test_an_edit_a_read_only_store_refuses_gets_one_sentence(viewer):
    # the rollback wrote back into the store that had refused the write, and its own error escaped
    # (found by a review helper)
    from napari_medai.widgets._layers import edit_labels

    layer = viewer.add_labels(_StoreArray(np.zeros((6, 8, 8), np.uint8), read_only=True), name="store")
    with pytest.raises(InputError, match="could not be edited.*nothing was changed"):
        edit_labels(layer, _box_mask(), 3)


def test_a_failed_edit_keeps_the_users_stroke_in_progress(viewer, monkeypatch):
    # a job's edit landing while the reader holds the mouse down on the same layer: only the failed
    # edit's own staged atoms go
    from napari.layers import Labels

    from napari_medai.widgets._layers import edit_labels

    layer = viewer.add_labels(np.zeros((6, 8, 8), np.uint8), name="lab")
    layer._begin_stroke()
    layer.data_setitem((np.array([0]), np.array([0]), np.array([0])), 2)  # the stroke so far
    real = Labels.data_setitem

    def fails_after_writing(self, indices, value, refresh=True):
        real(self, indices, value, refresh=refresh)
        raise IndexError("boom")

    monkeypatch.setattr(Labels, "data_setitem", fails_after_writing)
    with pytest.raises(InputError):
        edit_labels(layer, _box_mask(), 3)
    monkeypatch.undo()
    layer._commit_stroke()
    assert layer.data[0, 0, 0] == 2 and not (layer.data == 3).any()
    layer.undo()
    assert layer.data[0, 0, 0] == 0  # the stroke kept its undo step

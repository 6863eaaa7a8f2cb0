"""PerLesionLoss: every lesion counts the same whatever its size."""

import numpy as np
import pytest
import torch
from napari_medai.training.losses import PerLesionLoss


def _logits_for(labels: np.ndarray, n_classes: int = 3, scale: float = 20.0) -> torch.Tensor:
    """Logits whose softmax is (almost exactly) the one-hot of ``labels`` (B, *spatial)."""
    onehot = np.eye(n_classes, dtype=np.float32)[labels]  # B, z, y, x, C
    return torch.from_numpy(np.moveaxis(onehot, -1, 1) * scale)


def _two_nodules():
    target = np.zeros((1, 16, 32, 32), np.int64)
    target[0, 2:14, 2:16, 2:16] = 2  # large: 2352 voxels
    target[0, 7:9, 24:26, 24:26] = 2  # small: 8 voxels, far from the large one
    return target


def _batch_dice_loss(logits, y, c=2):
    """The usual Dice over the whole batch, for the lesion class alone."""
    p, g = torch.softmax(logits, 1)[:, c], (y[:, 0] == c).float()
    return 1 - 2 * (p * g).sum() / (p.sum() + g.sum())


def test_perfect_prediction_scores_zero():
    target = _two_nodules()
    loss = PerLesionLoss([2], ce_weight=0)(_logits_for(target), torch.from_numpy(target[:, None]))
    assert float(loss) == pytest.approx(0.0, abs=1e-4)


def test_a_missed_small_lesion_costs_half_where_the_batch_dice_barely_moves():
    target = _two_nodules()
    pred = target.copy()
    pred[0, 7:9, 24:26, 24:26] = 0  # the small nodule missed
    logits, y = _logits_for(pred), torch.from_numpy(target[:, None])
    per_lesion = float(PerLesionLoss([2], ce_weight=0)(logits, y))
    batch = float(_batch_dice_loss(logits, y))
    assert per_lesion == pytest.approx(0.5, abs=1e-3)  # one of two lesions found
    assert batch < 0.01  # 8 of 2360 voxels


def test_false_positives_anywhere_lower_every_lesion_but_other_lesions_do_not():
    target = _two_nodules()
    y = torch.from_numpy(target[:, None])
    fp = target.copy()
    fp[0, 10:12, 24:26, 24:26] = 2  # 8 false-positive voxels beside the small nodule
    assert float(PerLesionLoss([2], ce_weight=0)(_logits_for(fp), y)) > 0.1
    # the large nodule, correctly predicted, is masked out of the small one's score
    small_only = np.zeros_like(target)
    small_only[0, 7:9, 24:26, 24:26] = 2
    solo = PerLesionLoss([2], ce_weight=0)(_logits_for(target), torch.from_numpy(small_only[:, None]))
    assert float(solo) > 0.9  # without the mask the large nodule is one giant false positive


def test_gradient_reaches_a_small_lesion_far_more_than_through_the_batch_dice():
    target = _two_nodules()
    y = torch.from_numpy(target[:, None])
    grads = []
    for fn in (PerLesionLoss([2], ce_weight=0), _batch_dice_loss):
        logits = _logits_for(target, scale=8.0)
        logits[0, :, 7:9, 24:26, 24:26] = 0.0  # the network is unsure of the small nodule (p = 1/3)
        logits.requires_grad_(True)
        fn(logits, y).backward()
        grads.append(float(-logits.grad[0, 2, 7:9, 24:26, 24:26].mean()))
    assert grads[0] > 0 and grads[0] > 20 * grads[1]


def test_the_lesion_ce_revives_a_lesion_the_network_is_sure_is_background():
    target = _two_nodules()
    y = torch.from_numpy(target[:, None])
    pred = target.copy()
    pred[0, 7:9, 24:26, 24:26] = 0  # p(nodule) ~ 1e-9 there: the softmax is saturated
    grads = {}
    for ce in (0.0, 1.0):
        logits = _logits_for(pred).requires_grad_(True)
        PerLesionLoss([2], ce_weight=ce)(logits, y).backward()
        grads[ce] = float(-logits.grad[0, 2, 7:9, 24:26, 24:26].mean())
    assert grads[0.0] < 1e-6 and grads[1.0] > 0.01  # 1 / (2 lesions x 8 voxels) = 0.0625


def test_fragments_under_min_voxels_are_left_out():
    target = _two_nodules()
    target[0, 0, 30, 30] = 2  # a one-voxel spicule fragment, missed
    pred = _two_nodules()
    y = torch.from_numpy(target[:, None])
    assert float(PerLesionLoss([2], ce_weight=0)(_logits_for(pred), y)) > 0.3  # 1 of 3 missed
    assert float(PerLesionLoss([2], ce_weight=0, min_voxels=4)(_logits_for(pred), y)) < 1e-3


def test_no_lesion_in_the_batch_gives_zero_and_still_backpropagates():
    y = torch.zeros((2, 1, 4, 8, 8), dtype=torch.long)
    logits = torch.randn((2, 3, 4, 8, 8), requires_grad=True)
    loss = PerLesionLoss([2], ce_weight=0)(logits, y)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_hard_negatives_cost_only_where_they_are_called_lesion():
    from napari_medai.training.losses import HardNegativeLoss

    target = _two_nodules()
    negative = np.zeros((1, 1) + target.shape[1:], np.uint8)
    negative[0, 0, 7:9, 2:30, 20] = 1  # a "vessel" running through the crop, not on the large nodule
    loss = HardNegativeLoss([2])
    right = float(loss(_logits_for(target), torch.from_numpy(negative)))
    assert right == pytest.approx(0.0, abs=1e-4)
    called = target.copy()
    called[0, 7:9, 2:30, 20] = 2  # the same vessel called nodule
    wrong = float(loss(_logits_for(called), torch.from_numpy(negative)))
    # the vessel's voxels outside the large nodule (which overlaps it) are all wrong: mean CE ~ 20 nats
    assert wrong > 10.0
    # a lung call is no mistake for this term: only the lesion classes are penalised
    lung = target.copy()
    lung[0, 7:9, 2:30, 20] = 1
    assert float(loss(_logits_for(lung), torch.from_numpy(negative))) == pytest.approx(0.0, abs=1e-4)


def test_no_hard_negative_in_the_batch_gives_zero_without_nan():
    from napari_medai.training.losses import HardNegativeLoss

    target = _two_nodules()
    logits = _logits_for(target).requires_grad_(True)
    out = HardNegativeLoss([2])(logits, torch.zeros((1, 1) + target.shape[1:]))
    out.backward()
    assert float(out) == 0.0 and torch.isfinite(logits.grad).all()

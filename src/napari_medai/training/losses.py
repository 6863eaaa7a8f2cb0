"""Loss terms beyond MONAI's that lesion segmentation needs.

``PerLesionLoss`` is a per-lesion ("blob") Dice and cross-entropy, after Kofler et al., "blob loss:
instance imbalance aware loss functions for semantic segmentation" (IPMI 2023).  A Dice
over the whole batch weighs every voxel the same, so a 4 mm nodule (20 voxels) counts for
nothing beside a 25 mm one (8000 voxels) in the same batch: the network learned the large
nodules and gave probability 0.000 inside the small ones.  Here every connected lesion of
the target is scored on its own and the scores are averaged, so each nodule counts the same
whatever its size.  For one lesion the other lesions of its class are masked out; every
other voxel still counts, so false positives anywhere in the crop lower its score.

A Dice alone cannot revive a lesion the network is sure is background: at p = 1e-5 the
softmax is saturated and the Dice gradient through it vanishes.  So each lesion also gets
a cross-entropy over its own voxels (mean of -log p), whose gradient on the logits does not
vanish, averaged per lesion like the Dice (the batch CE spreads it over ~400 000 voxels).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


class PerLesionLoss:
    """Mean over the connected components of ``classes`` in the target of
    ``(1 - Dice) + ce_weight * CE``, the CE taken over the component's own voxels.

    ``logits``: (B, C, *spatial) network output (softmax is applied here);
    ``target``: (B, 1, *spatial) integer classes.  Components under ``min_voxels`` (spicule
    fragments cut off by resampling or by the crop's edge) are left to the batch loss.
    Returns a scalar tensor, 0 with no component in the batch (then without gradient).
    """

    def __init__(self, classes, ce_weight: float = 1.0, min_voxels: int = 1, smooth: float = 1e-5):
        self.classes = tuple(int(c) for c in classes)
        self.ce_weight = float(ce_weight)
        self.min_voxels = int(min_voxels)
        self.smooth = smooth

    def __call__(self, logits, target):
        import torch

        probs = torch.softmax(logits, dim=1)
        log_probs = torch.log_softmax(logits, dim=1) if self.ce_weight else None
        labels = target[:, 0].detach().cpu().numpy()
        terms = []
        for b in range(labels.shape[0]):
            for c in self.classes:
                mask = labels[b] == c
                comps, n = ndimage.label(mask, ndimage.generate_binary_structure(mask.ndim, mask.ndim))
                if n == 0:
                    continue
                # One pass sums each lesion's probabilities (index 0: voxels of no lesion of this
                # class), instead of building a full-size mask per lesion.
                idx = torch.from_numpy(comps.ravel().astype(np.int64)).to(logits.device)
                size = torch.bincount(idx, minlength=n + 1).to(probs.dtype)
                p_sum = torch.zeros(n + 1, dtype=probs.dtype, device=logits.device).index_add(
                    0, idx, probs[b, c].reshape(-1))
                k = torch.nonzero(size[1:] >= self.min_voxels)[:, 0] + 1
                if len(k) == 0:
                    continue
                # Lesion k's Dice counts its own voxels and every voxel of no lesion (the other
                # lesions of the class are masked out): denominator = p outside + p in k + |k|.
                dice = (2 * p_sum[k] + self.smooth) / (p_sum[0] + p_sum[k] + size[k] + self.smooth)
                loss = 1.0 - dice
                if self.ce_weight:
                    logp_sum = torch.zeros_like(p_sum).index_add(0, idx, log_probs[b, c].reshape(-1))
                    loss = loss - self.ce_weight * logp_sum[k] / size[k]
                terms.append(loss)
        if not terms:
            return logits.sum() * 0.0
        return torch.cat(terms).mean()


class HardNegativeLoss:
    """Mean over the hard-negative voxels of ``-log(1 - p(lesion))``, p summed over ``classes``.

    Why: the per-lesion loss above makes the network fire on 4 mm nodules, but then it fires
    on every vessel cross-section of the same size too (run 5c, docs/segmentation.md).  In the
    batch cross-entropy the vessel voxels are a few per cent of ~440 000 voxels, so calling
    them nodule costs almost nothing.  Averaged over the vessel voxels alone, that mistake
    weighs as much as missing the nodules does.  The term is taken from the logits
    (log-sum-exp of the non-lesion classes minus that of all classes), so it stays finite
    and its gradient does not vanish when the network is sure.

    ``logits``: (B, C, *spatial); ``negative``: (B, 1, *spatial), non-zero on the hard
    negatives (phantom vessels and airways, lumen and wall, by label value).  Returns a scalar tensor,
    0 without gradient when the batch holds no hard negative.
    """

    def __init__(self, classes):
        self.classes = tuple(int(c) for c in classes)

    def __call__(self, logits, negative):
        import torch

        mask = negative[:, 0] > 0
        if not bool(mask.any()):
            return logits.sum() * 0.0
        keep = [c for c in range(logits.shape[1]) if c not in self.classes]
        log_not_lesion = torch.logsumexp(logits[:, keep], dim=1) - torch.logsumexp(logits, dim=1)
        return -log_not_lesion[mask].mean()

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
        self.connectivity = None  # built per dimensionality on first call

    def _components(self, mask: np.ndarray) -> tuple[np.ndarray, int]:
        if self.connectivity is None or self.connectivity.ndim != mask.ndim:
            self.connectivity = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
        return ndimage.label(mask, self.connectivity)

    def __call__(self, logits, target):
        import torch

        probs = torch.softmax(logits, dim=1)
        log_probs = torch.log_softmax(logits, dim=1) if self.ce_weight else None
        labels = target[:, 0].detach().cpu().numpy()
        terms = []
        for b in range(labels.shape[0]):
            for c in self.classes:
                comps, n = self._components(labels[b] == c)
                if n == 0:
                    continue
                comps_t = torch.from_numpy(comps.astype(np.int64)).to(logits.device)
                sizes = np.bincount(comps.ravel(), minlength=n + 1)
                p = probs[b, c]
                outside_class = comps_t == 0  # voxels of no component of this class
                for k in range(1, n + 1):
                    if sizes[k] < self.min_voxels:
                        continue
                    g = (comps_t == k).to(p.dtype)
                    counted = outside_class.to(p.dtype) + g  # the other lesions are masked out
                    inter = (p * g).sum()
                    denom = (p * counted).sum() + g.sum()
                    loss = 1.0 - (2 * inter + self.smooth) / (denom + self.smooth)
                    if self.ce_weight:
                        loss = loss - self.ce_weight * (log_probs[b, c] * g).sum() / g.sum()
                    terms.append(loss)
        if not terms:
            return logits.sum() * 0.0
        return torch.stack(terms).mean()

"""Loss terms beyond MONAI's that lesion segmentation needs.

``ComponentDiceLoss`` is a per-lesion ("blob") Dice, after Kofler et al., "blob loss:
instance imbalance aware loss functions for semantic segmentation" (IPMI 2023).  A Dice
over the whole batch weighs every voxel the same, so a 4 mm nodule (20 voxels) counts for
nothing beside a 25 mm one (8000 voxels) in the same batch: the network learned the large
nodules and gave probability 0.000 inside the small ones.  Here every connected lesion of
the target is scored on its own and the scores are averaged, so each nodule counts the same
whatever its size.  For one lesion the other lesions of its class are masked out; every
other voxel still counts, so false positives anywhere in the crop lower its score.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


class ComponentDiceLoss:
    """``1 - mean Dice`` over the connected components of ``classes`` in the target.

    ``logits``: (B, C, *spatial) network output (softmax is applied here);
    ``target``: (B, 1, *spatial) integer classes.  Returns a scalar tensor, 0 with no
    component in the batch (then the term has no gradient).
    """

    def __init__(self, classes, smooth: float = 1e-5):
        self.classes = tuple(int(c) for c in classes)
        self.smooth = smooth
        self.connectivity = None  # built per dimensionality on first call

    def _components(self, mask: np.ndarray) -> tuple[np.ndarray, int]:
        if self.connectivity is None or self.connectivity.ndim != mask.ndim:
            self.connectivity = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
        return ndimage.label(mask, self.connectivity)

    def __call__(self, logits, target):
        import torch

        probs = torch.softmax(logits, dim=1)
        labels = target[:, 0].detach().cpu().numpy()
        scores = []
        for b in range(labels.shape[0]):
            for c in self.classes:
                comps, n = self._components(labels[b] == c)
                if n == 0:
                    continue
                comps_t = torch.from_numpy(comps.astype(np.int64)).to(logits.device)
                p = probs[b, c]
                outside_class = comps_t == 0  # voxels of no component of this class
                for k in range(1, n + 1):
                    g = (comps_t == k).to(p.dtype)
                    counted = outside_class.to(p.dtype) + g  # the other lesions are masked out
                    inter = (p * g).sum()
                    denom = (p * counted).sum() + g.sum()
                    scores.append((2 * inter + self.smooth) / (denom + self.smooth))
        if not scores:
            return logits.sum() * 0.0
        return 1.0 - torch.stack(scores).mean()

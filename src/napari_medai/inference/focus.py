"""Test-time mirroring where a lesion may be: ``tta="mirror-lesions"``.

Full mirroring runs the network four times over the whole volume, yet on a chest CT it
changes the labels almost only around nodules (lung Dice 0.992 -> 0.993, nodule Dice
0.767 -> 0.774 on the held-out phantoms, lung1's nodule 0.591 -> 0.732).  So the mirrored
passes run only the windows whose region the plain pass gives a lesion probability of at
least ``FOCUS_PROBABILITY`` somewhere.  Every other window of a mirrored pass returns the
plain pass's own stitched output for its region, so wherever no computed window reaches, the
averaged probabilities are exactly the plain pass's, and wherever only computed windows reach
(every voxel at or above the focus level) they are exactly full mirroring's.

Why 0.05: a voxel the plain pass gives less than that can only reach the shipped card's
lesion threshold of 0.5 if the three mirrored views average more than 0.65 there, and the
lowest threshold the fit tries (0.1) if they average more than 0.117.
"""

from __future__ import annotations

import torch

from ..errors import ModelError

FOCUS_PROBABILITY = 0.05


def lesion_channels(card) -> list[int]:
    """The card's lesion classes as output channels (a segmentation-based detector's: the
    channel its findings are read from), or a clear error where it names none."""
    lesions = [int(i) for i in card.extra.get("lesions", ())]
    if not lesions and card.extra.get("probability_channel") is not None:
        lesions = [int(card.extra["probability_channel"])]
    if card.output not in ("softmax", "sigmoid") or not lesions:
        raise ModelError(f"model '{card.name}' names no lesion class with a probability (extra['lesions'] and a "
                         "softmax or sigmoid output), so mirroring cannot be limited to lesions: use mirror or off")
    bad = [i for i in lesions if not 0 <= i < card.out_channels]
    if bad:
        raise ModelError(f"model '{card.name}' names lesion class(es) {bad}, but it has {card.out_channels} outputs")
    return lesions


def lesion_focus(raw: torch.Tensor, card) -> torch.Tensor:
    """Where the plain pass's lesion probability is at least ``FOCUS_PROBABILITY``.

    ``raw``: its stitched network output (B, C, *spatial), before the activation.  Returns a
    bool (B, *spatial).  For softmax, p_l = exp(z_l - logsumexp(z)), which needs one
    spatial-size buffer instead of a copy of every channel."""
    lesions = lesion_channels(card)
    if card.output == "sigmoid":
        logit = torch.logit(torch.tensor(FOCUS_PROBABILITY)).item()
        return (raw[:, lesions] >= logit).any(1)
    norm = torch.logsumexp(raw, 1)
    level = torch.log(torch.tensor(FOCUS_PROBABILITY)).item()
    focus = torch.zeros_like(norm, dtype=torch.bool)
    for c in lesions:
        focus |= (raw[:, c] - norm) >= level
    return focus


class FocusedPass:
    """For one mirrored pass: whether a window runs, and what a window that does not returns.

    ``raw``/``focus``: the plain pass's stitched output (B, C, *spatial) and ``lesion_focus`` of
    it, in the unflipped frame; ``dims``: the input dims (B, C, *spatial numbering) this pass
    flips.  Windows arrive as MONAI's coordinates (batch slice, channel slice, *spatial
    slices) in the flipped frame of the image as MONAI padded it: ``pads`` gives, per spatial
    axis, the padding before it (MONAI pads an image smaller than the window on both sides)."""

    def __init__(self, raw: torch.Tensor, focus: torch.Tensor, dims: tuple[int, ...], pads: tuple[int, ...]):
        self.raw, self.focus, self.dims, self.pads = raw, focus, tuple(dims), tuple(pads)
        self._runs: dict[tuple, bool] = {}  # asked when counting and again when running

    def _region(self, coords) -> tuple:
        """The window's region in the unflipped, unpadded frame of ``raw``, and the flips it
        takes to be seen from the pass's frame."""
        batch, spatial = coords[0], coords[2:]
        region = [batch, slice(None)]
        for axis, (s, pad) in enumerate(zip(spatial, self.pads)):
            size = self.raw.shape[2 + axis]
            start, stop = s.start - pad, s.stop - pad  # in the flipped, unpadded frame
            if 2 + axis in self.dims:
                start, stop = size - stop, size - start
            region.append(slice(start, stop))
        return tuple(region)

    def runs(self, coords) -> bool:
        """Whether the window must run: its region holds a focus voxel, or pads the image."""
        key = tuple((s.start, s.stop) for s in (coords[0], *coords[2:]))
        if key not in self._runs:
            region = self._region(coords)
            inside = all(0 <= r.start and r.stop <= n for r, n in zip(region[2:], self.raw.shape[2:]))
            self._runs[key] = not inside or bool(self.focus[(region[0], *region[2:])].any())
        return self._runs[key]

    def stand_in(self, coords) -> torch.Tensor:
        """The plain pass's output for a window that does not run, as the pass's frame sees it."""
        out = self.raw[self._region(coords)][0]  # (C, *window): the batch axis is the caller's
        return out.flip([d - 1 for d in self.dims]) if self.dims else out

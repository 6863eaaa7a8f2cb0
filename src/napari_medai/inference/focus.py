"""Test-time mirroring where a lesion may be: ``tta="mirror-lesions"``.

Full mirroring runs the network four times over the whole volume, yet on a chest CT it
changes the labels almost only around nodules (lung Dice 0.992 -> 0.993, nodule Dice
0.767 -> 0.774 on the held-out phantoms, lung1's nodule 0.591 -> 0.732).  So the mirrored
passes run only the windows whose region the plain pass gives a lesion probability of at
least ``FOCUS_PROBABILITY`` somewhere.  Every other window of a mirrored pass returns the
plain pass's own stitched output for its region.  So on the model's working grid, wherever no
computed window reaches, the averaged probabilities are exactly the plain pass's, and wherever
only computed windows reach (every voxel at or above the focus level) they are exactly full
mirroring's.  Back on the input grid (when the model runs at another spacing) the
interpolation mixes neighbours, so voxels at the edge of the focus region differ from full
mirroring's by a little (up to 0.002 in a test with a 2 mm model grid on 1 mm voxels).

Why 0.05: a voxel the plain pass gives less than that can only reach the shipped card's
lesion threshold of 0.5 if the three mirrored views average more than 0.65 there, and the
lowest threshold the fit tries (0.1) if they average more than 0.117.  A card whose
probabilities matter lower down says so with ``extra["focus_probability"]``: the built-in
detector's candidates start at 0.02, so it mirrors from 0.01 (a voxel under that reaches
0.02 only if the mirrored views average more than 0.023 there).  ``InferenceSettings.
focus_probability`` overrides the card (``screen()``'s one run takes the lower of its two
models' levels).
"""

from __future__ import annotations

import torch

from ..errors import InputError, ModelError

FOCUS_PROBABILITY = 0.05  # for a card that names no level of its own


def check_focus_probability(value, what: str, error=ModelError) -> float:
    """``value`` as a probability strictly between 0 and 1, or a clear ``error`` naming ``what``
    (at 0 every window would run, at 1 none).  Only a number passes: a quoted "0.9" in a card is
    refused, as ``lesion_confident`` refuses it, rather than read one way here and another there."""
    import numbers

    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    level = float(value) if is_number else float("nan")
    if not 0.0 < level < 1.0:
        raise error(f"{what} must be a probability between 0 and 1 (exclusive), got {value!r}")
    return level


def focus_level(settings, card) -> float:
    """The lesion probability from which ``tta="mirror-lesions"`` mirrors a window: the
    settings' ``focus_probability``, else the card's ``extra["focus_probability"]``, else
    ``FOCUS_PROBABILITY``."""
    if getattr(settings, "focus_probability", None) is not None:
        return check_focus_probability(settings.focus_probability, "focus_probability", InputError)
    value = card.extra.get("focus_probability")
    if value is None:
        return FOCUS_PROBABILITY
    return check_focus_probability(value, f"model '{card.name}': extra['focus_probability']")


def lesion_channels(card) -> list[int]:
    """The output channels of the card's lesion classes (a multi-label card's label k + 1 is
    channel k; a segmentation-based detector's channel is the one its findings are read
    from), or a clear error where it names none."""
    from ..models.card import label_channel

    lesions = [label_channel(card, i) for i in card.extra.get("lesions", ())]
    if not lesions and card.extra.get("probability_channel") is not None:
        lesions = [int(card.extra["probability_channel"])]
    if card.output not in ("softmax", "sigmoid") or not lesions:
        raise ModelError(f"model '{card.name}' names no lesion class with a probability (extra['lesions'] and a "
                         "softmax or sigmoid output), so mirroring cannot be limited to lesions: use mirror or off")
    bad = [i for i in lesions if not 0 <= i < card.out_channels]
    if bad:
        raise ModelError(f"model '{card.name}' reads lesions from output channel(s) {bad}, but it has "
                         f"{card.out_channels} outputs")
    return lesions


def lesion_focus(raw: torch.Tensor, card, level: float = FOCUS_PROBABILITY) -> torch.Tensor:
    """Where the plain pass's lesion probability is at least ``level``.

    ``raw``: its stitched network output (B, C, *spatial), before the activation.  Returns a
    bool (B, *spatial).  For softmax, p_l = exp(z_l - logsumexp(z)), which needs one
    spatial-size buffer instead of a copy of every channel."""
    lesions = lesion_channels(card)
    if card.output == "sigmoid":
        logit = torch.logit(torch.tensor(float(level))).item()
        return (raw[:, lesions] >= logit).any(1)
    norm = torch.logsumexp(raw, 1)
    level = torch.log(torch.tensor(float(level))).item()
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
    axis, the padding before it (MONAI pads an image smaller than the window on both sides).
    A window's padded part is cut from what it returns, so only its part inside the image
    counts, and a stand-in returns zeros there."""

    def __init__(self, raw: torch.Tensor, focus: torch.Tensor, dims: tuple[int, ...], pads: tuple[int, ...]):
        self.raw, self.focus, self.dims, self.pads = raw, focus, tuple(dims), tuple(pads)
        self._runs: dict[tuple, bool] = {}  # asked when counting and again when running

    def _parts(self, coords) -> tuple[tuple, tuple]:
        """The window's part inside the image: its region in ``raw``'s unflipped, unpadded frame,
        and where that part lies in the window."""
        region, inside = [coords[0], slice(None)], [slice(None)]
        for axis, (s, pad) in enumerate(zip(coords[2:], self.pads)):
            size = self.raw.shape[2 + axis]
            start, stop = s.start - pad, s.stop - pad  # flipped, unpadded frame: may reach into the padding
            lo, hi = max(start, 0), min(stop, size)
            inside.append(slice(lo - start, hi - start))
            if 2 + axis in self.dims:
                lo, hi = size - hi, size - lo
            region.append(slice(lo, hi))
        return tuple(region), tuple(inside)

    def runs(self, coords) -> bool:
        """Whether the window must run: its part inside the image holds a focus voxel."""
        key = tuple((s.start, s.stop) for s in (coords[0], *coords[2:]))
        if key not in self._runs:
            region, _ = self._parts(coords)
            self._runs[key] = bool(self.focus[(region[0], *region[2:])].any())
        return self._runs[key]

    def stand_in(self, coords) -> torch.Tensor:
        """The plain pass's output for a window that does not run, as the pass's frame sees it
        (C, *window); zeros in the window's padded part."""
        region, inside = self._parts(coords)
        part = self.raw[region][0]  # the batch axis is the caller's
        if self.dims:
            part = part.flip([d - 1 for d in self.dims])
        window = tuple(s.stop - s.start for s in coords[2:])
        if tuple(part.shape[1:]) == window:
            return part
        out = part.new_zeros((part.shape[0], *window))
        out[inside] = part
        return out

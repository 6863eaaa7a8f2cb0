"""Re-orient a (C, z, y, x) volume into the array layout a network was trained on, and back.

The project's arrays have axes (z, y, x) pointing to (S, P, L): orientation code "SPL".
MONAI bundles usually train on arrays in "RAS" order (axis 0 towards the patient's right,
axis 1 anterior, axis 2 superior).  Running such a network on our arrays unchanged would
show it a transposed, mirrored patient, so the engine permutes/flips the volume first.
"""

from __future__ import annotations

import torch

OURS = "SPL"
_OPPOSITE = {"S": "I", "I": "S", "P": "A", "A": "P", "L": "R", "R": "L"}


def axes_permutation(code: str) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """For each network axis: which of our axes it is, and whether it runs the other way."""
    from ..errors import ModelError

    code = code.upper()
    perm, flips = [], []
    for letter in code:
        for axis, ours in enumerate(OURS):
            if letter == ours or letter == _OPPOSITE[ours]:
                perm.append(axis)
                flips.append(letter != ours)
    if len(code) != 3 or sorted(perm) != [0, 1, 2]:
        raise ModelError(f"'{code}' is not an orientation code (three of R/L, A/P, S/I, e.g. 'RAS')")
    return tuple(perm), tuple(flips)


def to_network_axes(volume: torch.Tensor, code: str) -> torch.Tensor:
    """(C, z, y, x) in our layout -> (C, a, b, c) in the network's.  No copy when code == 'SPL'."""
    perm, flips = axes_permutation(code)
    if perm == (0, 1, 2) and not any(flips):
        return volume
    out = volume.permute(0, *(p + 1 for p in perm))
    flip_dims = [i + 1 for i, f in enumerate(flips) if f]
    return out.flip(flip_dims) if flip_dims else out.contiguous()


def from_network_axes(volume: torch.Tensor, code: str) -> torch.Tensor:
    """Inverse of :func:`to_network_axes`."""
    perm, flips = axes_permutation(code)
    if perm == (0, 1, 2) and not any(flips):
        return volume
    flip_dims = [i + 1 for i, f in enumerate(flips) if f]
    if flip_dims:
        volume = volume.flip(flip_dims)
    inverse = [perm.index(axis) for axis in range(3)]
    return volume.permute(0, *(i + 1 for i in inverse)).contiguous()


def sizes_to_network_axes(values_zyx, code: str) -> tuple:
    perm, _ = axes_permutation(code)
    return tuple(values_zyx[p] for p in perm)

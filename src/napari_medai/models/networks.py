"""Build a network from a card's ``network`` entry: a MONAI network name or a dotted path."""

from __future__ import annotations

import importlib
import inspect
import os
import sys

import torch

from ..errors import ModelError
from .card import ModelCard


# packages a card may name a network class from without their being imported first
TRUSTED_PACKAGES = ("monai", "torch", "napari_medai")
NETWORK_PACKAGES_ENV = "MEDAI_NETWORK_PACKAGES"


def resolve_network_class(name: str):
    """'UNet' -> monai.networks.nets.UNet; 'package.module.Class' -> that class."""
    if not isinstance(name, str) or not name:
        raise ModelError("the card's network needs a 'name' (e.g. 'UNet' or 'package.module.Class')")
    if "." not in name:
        from monai.networks import nets

        cls = getattr(nets, name, None)
        if cls is None:
            raise ModelError(f"MONAI has no network called '{name}' (see monai.networks.nets)")
        return cls
    module_name, _, attr = name.rpartition(".")
    # Importing a module runs its code, and the name comes from a card file: only packages the
    # plugin trusts, packages already imported, and those the user names in the environment
    # variable are imported (a card naming "this.Foo" printed the Zen of Python before failing)
    top = module_name.split(".")[0]
    allowed = {*TRUSTED_PACKAGES, *(p.strip() for p in os.environ.get(NETWORK_PACKAGES_ENV, "").split(",") if p.strip())}
    if top not in allowed and top not in sys.modules:
        raise ModelError(f"the card's network '{name}' comes from package '{top}', which is not imported: napari-medai "
                         f"does not import a package a model card names, since importing runs its code. Import it "
                         f"first (in Python), or allow it with {NETWORK_PACKAGES_ENV}={top} (comma-separated names)")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot import network '{name}': {exc}") from None
    # Only a network class is ever called: a card naming any other callable (a shell command
    # runner, say) with its kwargs would run it the moment the card is loaded.
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        raise ModelError(f"the card's network '{name}' is not a network class (a torch.nn.Module subclass); "
                         "it was not called")
    return cls


def build_network(card: ModelCard) -> torch.nn.Module:
    """Instantiate ``card.network`` with random weights.

    ``spatial_dims``, ``in_channels`` and ``out_channels`` come from the card when the
    constructor takes them and the kwargs do not give them; a kwarg that contradicts the
    card is an error, so a card cannot silently describe a different network.
    """
    spec = card.network or {}
    cls = resolve_network_class(spec.get("name"))
    kwargs = dict(spec.get("kwargs") or {})
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    for key in ("spatial_dims", "in_channels", "out_channels"):
        value = getattr(card, key)
        if key in kwargs and kwargs[key] != value:
            raise ModelError(
                f"model card '{card.name}': network {key}={kwargs[key]} contradicts the card's {key}={value}"
            )
        if key in params:
            kwargs[key] = value
    try:
        network = cls(**kwargs)
    except Exception as exc:  # the constructor's own message says what is wrong
        raise ModelError(f"cannot build network {spec.get('name')} for '{card.name}': {exc}") from None
    if not isinstance(network, torch.nn.Module):
        raise ModelError(f"'{spec.get('name')}' did not build a torch.nn.Module")
    return network

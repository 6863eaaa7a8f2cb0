"""User-facing errors.

Every problem a user can cause (wrong layer, bad file, absurd spacing, cancel) is raised as
one of these, with a message written for a radiologist, so the widgets can show it as a
notification and the CLI can print it without a traceback.
"""


class MedaiError(ValueError):
    """A problem with the user's input or request; the message is shown as is."""


class InputError(MedaiError):
    """The image, file or layer handed to the plugin cannot be used."""


class ModelError(MedaiError):
    """A model file or bundle cannot be loaded, or does not fit the data."""


class Cancelled(Exception):
    """Raised inside a job when the user pressed Cancel; nothing must be left behind."""


def reason_of(exc: BaseException) -> str:
    """The line of a library's error that says what went wrong, for a one-sentence message
    (TorchScript's first line only says that "the following operation failed")."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__

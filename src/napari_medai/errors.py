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


def out_of_memory_message(exc: BaseException) -> str | None:
    """One sentence for a run that ran out of memory (torch's OutOfMemoryError on a GPU, a
    RuntimeError saying so on Apple's MPS; numpy's MemoryError or torch's "can't allocate memory"
    on the CPU), else None: they surfaced as a traceback in the CLI and as a program error in the
    widgets.  It says nothing of what was written: a command that writes as it goes (phantoms,
    training) may have written some files first."""
    text = str(exc).lower()
    gpu = type(exc).__name__ == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "out of memory" in text)
    cpu = isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "cannot allocate memory" in text or "defaultcpuallocator" in text))
    if not gpu and not cpu:
        return None
    reason = reason_of(exc) if str(exc) else type(exc).__name__
    if gpu:
        return (f"the GPU ran out of memory ({reason}). Run it on the CPU (device 'cpu'), close other programs "
                "using the GPU, or crop the image to the region you need")
    return (f"the computer ran out of memory ({reason}). Close other programs or layers, or crop the image to the "
            "region you need")


def reason_of(exc: BaseException) -> str:
    """The line of a library's error that says what went wrong, for a one-sentence message
    (TorchScript's first line only says that "the following operation failed")."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__

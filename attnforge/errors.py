"""The error types of attnforge: one for parameters, one for artifact files.

Every check in the project raises one of these (or ``TypeError`` for a value of
the wrong Python type), so the command line maps them to one exit code and a
library user catches them by one name:

* ``ConfigError`` — an impossible generator or model parameter (a width that
  could overflow, a count out of range, an unknown choice);
* ``ArtifactError`` — a file or in-memory artifact that does not follow its
  format (``masks.npz``, head tensors, linear decode tensors, ticket CSR,
  checkpoints).

Both derive from ``ValueError`` (what callers caught before they existed) and
from ``AttnforgeError``. Nothing here imports anything but the standard library.
"""

from __future__ import annotations

__all__ = ["AttnforgeError", "ConfigError", "ArtifactError", "MissingArtifactError", "check_int", "check_choice"]


class AttnforgeError(Exception):
    """Base of attnforge's own errors."""


class ConfigError(AttnforgeError, ValueError):
    """A parameter value that attnforge cannot build or run; the message names it and what is accepted."""


class ArtifactError(AttnforgeError, ValueError):
    """A file or array that does not follow its documented format; the message names the source."""


class MissingArtifactError(ArtifactError, FileNotFoundError):
    """An artifact file that does not exist (also a ``FileNotFoundError``, as ``open`` would raise)."""


def check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is an int in ``[minimum, maximum]``.

    Raises ``TypeError`` for a non-integer (``bool`` included) and ``ConfigError``
    for a value out of range; both messages name ``name``, the value and the range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{name} must be {allowed}, not {value}")
    return value


def check_choice(name: str, value, choices) -> object:
    """``value`` if it is one of ``choices``; else ``ConfigError`` listing them."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{name} must be one of {listed}, not {value!r}")
    return value

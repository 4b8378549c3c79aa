"""How Python values are stored and loaded.

Exact ``bytes``, ``str`` and ``int`` (signed 64-bit) go to the core as they
are and are stored natively (so ``incr`` is atomic across processes, and a
get of them runs no Python code at all). Everything else is pickled here and
passed as ``(ENC_PICKLE, data)``; the core hands back such a tuple for every
non-native encoding. Exact types only: a ``bool`` or a ``SafeString`` is
pickled and comes back as itself. A ``str`` holding lone surrogates has no
UTF-8 form, so it is pickled too (and comes back equal).
"""

from __future__ import annotations

import pickle
from typing import Any

from . import _core

ENC_PICKLE = _core.ENC_PICKLE


def pickled(value: Any, protocol: int) -> tuple[int, bytes]:
    return (ENC_PICKLE, pickle.dumps(value, protocol))


def encode(value: Any, protocol: int) -> Any:
    """What to pass to the core for `value`."""
    t = type(value)
    if t is bytes:
        return value
    if t is str:
        if value.isascii():  # O(1) in CPython: a flag of the string
            return value
        try:
            value.encode()
        except UnicodeEncodeError:
            return pickled(value, protocol)
        return value
    if t is int and -(2**63) <= value < 2**63:
        return value
    return pickled(value, protocol)


def load(item: tuple[int, bytes]) -> Any:
    """A non-native item from the core. Raises whatever unpickling raises,
    or ValueError for an encoding this version does not know (the caller
    treats both as a miss and drops the value)."""
    enc, data = item
    if enc == ENC_PICKLE:
        return pickle.loads(data)
    raise ValueError(f"unknown value encoding {enc}")

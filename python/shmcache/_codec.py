"""How Python values become (encoding, bytes) in the cache and back.

Exact ``bytes`` and ``str`` are stored as they are, exact ``int`` in the
signed 64-bit range natively (so ``incr`` is atomic across processes),
everything else pickled. Exact types only: a ``SafeString`` or a ``bool`` is
pickled and comes back as itself.
"""

from __future__ import annotations

import pickle
from typing import Any

from . import _core

ENC_BYTES = _core.ENC_BYTES  # 0
ENC_PICKLE = 1
ENC_INT = _core.ENC_INT  # 2
ENC_STR = 3

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


def encode(value: Any, protocol: int) -> tuple[int, Any]:
    t = type(value)
    if t is bytes:
        return ENC_BYTES, value
    if t is int and _I64_MIN <= value <= _I64_MAX:
        return ENC_INT, value
    if t is str:
        try:
            return ENC_STR, value.encode()
        except UnicodeEncodeError:  # lone surrogates: let pickle keep them
            pass
    return ENC_PICKLE, pickle.dumps(value, protocol)


def decode(enc: int, data: Any) -> Any:
    """May raise whatever unpickling raises (the caller treats it as a miss)."""
    if enc == ENC_BYTES or enc == ENC_INT:
        return data
    if enc == ENC_STR:
        return data.decode()
    if enc == ENC_PICKLE:
        return pickle.loads(data)
    raise ValueError(f"unknown value encoding {enc}")

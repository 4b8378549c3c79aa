"""How Python values are stored and loaded.

Exact ``bytes``, ``str`` and ``int`` (of any size) go to the core as they are and are stored
natively (so ``incr`` is atomic across processes, and a get of them runs no
Python code at all). Everything else is serialized here (pickle by default;
JSON or msgpack with ``serializer=``) and passed as ``(encoding, data)``; the
core hands back such a tuple for every non-native encoding. Exact types only:
a ``bool`` or a ``SafeString`` is serialized and comes back as itself. A
``str`` holding lone surrogates has no UTF-8 form, so it is serialized too.

The encoding byte stored with an item says how to load it, whatever this
process's settings: its low four bits name the serializer (or a native
type), its high four bits the compressor (0: none). So processes with other
SERIALIZER/COMPRESSOR settings read each other's values, except that a codec
whose serializer is not pickle refuses pickled data (that is what choosing
JSON or msgpack buys: no code runs on load).
"""

from __future__ import annotations

import gzip
import json
import lzma
import pickle
import zlib
from collections.abc import Callable
from typing import Any

from . import _core

ENC_BYTES = _core.ENC_BYTES
ENC_PICKLE = _core.ENC_PICKLE
ENC_INT = _core.ENC_INT
ENC_STR = _core.ENC_STR
ENC_JSON = 5
ENC_MSGPACK = 6
_SERIALIZERS = {"pickle": ENC_PICKLE, "json": ENC_JSON, "msgpack": ENC_MSGPACK}


def _zstd() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    try:
        from compression import zstd  # Python 3.14

        return zstd.compress, zstd.decompress
    except ImportError:
        pass
    try:
        import pyzstd

        return pyzstd.compress, pyzstd.decompress
    except ImportError:
        import zstandard

        return zstandard.ZstdCompressor().compress, zstandard.ZstdDecompressor().decompress


def _lz4() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    import lz4.frame

    return lz4.frame.compress, lz4.frame.decompress


# name -> (tag in the high nibble, () -> (compress, decompress), the package to install)
_COMPRESSORS: dict[str, tuple[int, Callable[[], tuple], str | None]] = {
    "zlib": (1, lambda: (zlib.compress, zlib.decompress), None),
    "lzma": (2, lambda: (lzma.compress, lzma.decompress), None),
    "zstd": (3, _zstd, "pyzstd (or zstandard)"),
    "lz4": (4, _lz4, "lz4"),
    "gzip": (5, lambda: (gzip.compress, gzip.decompress), None),
}
_BY_TAG = {tag: (name, load) for name, (tag, load, _) in _COMPRESSORS.items()}
_DECOMPRESS: dict[int, Callable[[bytes], bytes]] = {}

# The names django-redis users have in their OPTIONS.
DJANGO_REDIS_SERIALIZERS = {
    "django_redis.serializers.pickle.PickleSerializer": "pickle",
    "django_redis.serializers.json.JSONSerializer": "json",
    "django_redis.serializers.msgpack.MSGPackSerializer": "msgpack",
}
DJANGO_REDIS_COMPRESSORS = {
    "django_redis.compressors.identity.IdentityCompressor": None,
    "django_redis.compressors.zlib.ZlibCompressor": "zlib",
    "django_redis.compressors.lzma.LzmaCompressor": "lzma",
    "django_redis.compressors.zstd.ZStdCompressor": "zstd",
    "django_redis.compressors.lz4.Lz4Compressor": "lz4",
    "django_redis.compressors.gzip.GzipCompressor": "gzip",
}


def _decompressor(tag: int) -> Callable[[bytes], bytes]:
    f = _DECOMPRESS.get(tag)
    if f is None:
        if tag not in _BY_TAG:
            raise ValueError(f"unknown compression {tag} in a stored value's encoding")
        name, load = _BY_TAG[tag]
        try:
            f = _DECOMPRESS[tag] = load()[1]
        except ImportError:
            raise ValueError(f"a stored value is {name}-compressed and {name} support is not installed") from None
    return f


def parse_serializer(value: object, option: str) -> str:
    name = DJANGO_REDIS_SERIALIZERS.get(value, value) if isinstance(value, str) else value
    if name not in _SERIALIZERS:
        raise ValueError(f"invalid {option}: {value!r}; give 'pickle', 'json' or 'msgpack'")
    if name == "msgpack":
        try:
            import msgpack  # noqa: F401
        except ImportError:
            raise ValueError(f"invalid {option}: {value!r} needs the msgpack package: pip install msgpack") from None
    return name


def parse_compressor(value: object, option: str) -> str | None:
    name = DJANGO_REDIS_COMPRESSORS.get(value, value) if isinstance(value, str) else value
    if name is None:
        return None
    if name not in _COMPRESSORS:
        raise ValueError(f"invalid {option}: {value!r}; give None, {', '.join(repr(n) for n in _COMPRESSORS)}")
    _, load, package = _COMPRESSORS[name]
    try:
        load()
    except ImportError:
        raise ValueError(f"invalid {option}: {value!r} needs a package: pip install {package}") from None
    return name


class Codec:
    """Encodes values for the core and loads what it returns, for one
    serializer, compressor (or None) and pickle protocol."""

    def __init__(
        self,
        serializer: str = "pickle",
        compressor: str | None = None,
        compress_min_length: int = 1024,
        pickle_protocol: int = pickle.HIGHEST_PROTOCOL,
        json_encoder: type[json.JSONEncoder] | None = None,
    ) -> None:
        self.serializer, self.compressor = serializer, compressor
        self._enc = _SERIALIZERS[serializer]
        self._protocol = pickle_protocol
        self._min = compress_min_length
        if serializer == "pickle":
            self._dumps: Callable[[Any], bytes] = lambda v: pickle.dumps(v, pickle_protocol)
        elif serializer == "json":
            self._dumps = lambda v: json.dumps(v, cls=json_encoder, separators=(",", ":")).encode()
        else:
            import msgpack

            self._dumps = lambda v: msgpack.packb(v, use_bin_type=True)
        if compressor is None:
            self._ctag, self._compress = 0, None
        else:
            tag, load, _ = _COMPRESSORS[compressor]
            self._ctag, self._compress = tag << 4, load()[0]

    def encode(self, value: Any) -> Any:
        """What to pass to the core for `value`."""
        t = type(value)
        if t is bytes:
            return value if self._compress is None or len(value) < self._min else self._squeeze(ENC_BYTES, value)
        if t is str:
            if not value.isascii():  # isascii is O(1) in CPython: a flag of the string
                try:
                    value.encode()
                except UnicodeEncodeError:
                    return self._serialized(value)
            if self._compress is None or len(value) < self._min:
                return value
            return self._squeeze(ENC_STR, value.encode())
        if t is int:  # any size: the core stores it natively (ENC_INT or ENC_BIGINT)
            return value
        return self._serialized(value)

    def _serialized(self, value: Any) -> tuple[int, bytes]:
        data = self._dumps(value)
        if self._compress is not None and len(data) >= self._min:
            return self._squeeze(self._enc, data)
        return (self._enc, data)

    def _squeeze(self, enc: int, data: bytes) -> Any:
        packed = self._compress(data)
        if len(packed) < len(data):
            return (enc | self._ctag, packed)
        return (enc, data) if enc != ENC_BYTES else data

    def load(self, item: tuple[int, bytes]) -> Any:
        """A non-native item from the core. Raises whatever loading raises,
        or ValueError for an encoding this codec does not load (the caller
        treats both as a miss and drops the value)."""
        enc, data = item
        if enc >> 4:
            data = _decompressor(enc >> 4)(data)
            enc &= 0x0F
        if enc == ENC_PICKLE:
            if self._enc != ENC_PICKLE:
                raise ValueError(f"refusing to unpickle a stored value: SERIALIZER is {self.serializer!r}")
            return pickle.loads(data)
        if enc == ENC_JSON:
            return json.loads(data)
        if enc == ENC_MSGPACK:
            import msgpack

            return msgpack.unpackb(data, raw=False)
        if enc == ENC_BYTES:
            return data
        if enc == ENC_STR:
            return data.decode()
        raise ValueError(f"unknown value encoding {enc}")

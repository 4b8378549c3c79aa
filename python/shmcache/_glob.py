"""Redis glob patterns (KEYS, SCAN MATCH): ``*``, ``?``, ``[abc]``, ``[^a]``,
``[a-z]`` and ``\\x`` for a literal x, as django-redis users write them."""

from __future__ import annotations

import re

_META = "*?["


def glob_escape(s: str) -> str:
    """`s` matched literally (what django-redis does to KEY_PREFIX)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


def literal_prefix(pattern: str) -> str:
    """The characters every match starts with: up to the first wildcard."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c in _META:
            break
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
        out.append(c)
        i += 1
    return "".join(out)


def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regex that matches what the Redis glob `pattern` matches, whole."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j, cls = i + 1, []
            if j < n and pattern[j] == "^":
                cls.append("^")
                j += 1
            while j < n and pattern[j] != "]":
                if pattern[j] == "\\" and j + 1 < n:
                    j += 1
                    cls.append(re.escape(pattern[j]))
                elif pattern[j] == "-" and cls and j + 1 < n and pattern[j + 1] != "]":
                    cls.append("-")
                else:
                    cls.append(re.escape(pattern[j]))
                j += 1
            if j >= n:  # no closing bracket: Redis takes the rest literally up to the end
                out.append(re.escape(pattern[i:]))
                break
            out.append("[" + "".join(cls) + "]" if cls and cls != ["^"] else "(?!)")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.S)

"""Typed, bounded reads of an operation's JSON body: every malformed value is a short 400 naming the field.

The broker's operations read their arguments only through these (``I.text(body, "cid")``), so a number
that is not a number, a signal that does not exist or base64 that is not base64 is the caller's error
(:class:`~jupyter_ptcuda.errors.ConfigError`, 400), never a 500 or a 502 from the engine.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import signal as signal_module
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError

_CID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")  # an id, a prefix of one, or a container name


def _bad(field: str, why: str) -> ConfigError:
    return ConfigError(f"{field}: {why}", field=field)


def text(body: Mapping[str, Any], field: str, *, default: str = "", limit: int = 4096) -> str:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise _bad(field, f"give a string of at most {limit} characters.")
    return value


def cid(body: Mapping[str, Any]) -> str:
    """A container id (or a prefix of one, or its name); "" when absent (then nothing is found: 404)."""
    value = text(body, "cid", limit=128)
    if value and not _CID.match(value):
        raise _bad("cid", "give a container id or name (letters, digits, '_', '.', '-').")
    return value


def number(body: Mapping[str, Any], field: str, *, default: float | None = None, minimum: float = 0.0,
           maximum: float = 1e12) -> float:
    value = body.get(field)
    if value is None:
        if default is None:
            raise _bad(field, "a number is required.")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not minimum <= value <= maximum:
        raise _bad(field, f"give a number from {minimum:g} to {maximum:g}.")
    return float(value)


def integer(body: Mapping[str, Any], field: str, *, default: int | None = None, minimum: int = 0,
            maximum: int = 2**31) -> int | None:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise _bad(field, f"give a whole number from {minimum} to {maximum}.")
    return value


def flag(body: Mapping[str, Any], field: str, default: bool = False) -> bool:
    value = body.get(field, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(field, "give true or false.")
    return value


def choice(body: Mapping[str, Any], field: str, choices: Sequence[str], *, default: str) -> str:
    value = body.get(field)
    if value is None:
        return default
    if value not in choices:
        raise _bad(field, f"one of {', '.join(choices)}.")
    return str(value)


def b64(body: Mapping[str, Any], field: str, *, limit: int = 16 * 1024**2) -> bytes | None:
    value = body.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit * 4 // 3 + 4:
        raise _bad(field, f"give base64 of at most {limit} bytes.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(field, "not base64.") from None


def strings(body: Mapping[str, Any], field: str, *, limit: int = 1024, each: int = 65536) -> list[str]:
    value = body.get(field)
    if not isinstance(value, list) or not value or len(value) > limit or not all(
            isinstance(a, str) and len(a) <= each and "\x00" not in a for a in value):
        raise _bad(field, f"give a list of 1 to {limit} strings.")
    return value


def env(body: Mapping[str, Any], field: str = "env") -> dict[str, str]:
    value = body.get(field) or {}
    if not isinstance(value, Mapping) or len(value) > 256 or not all(
            isinstance(k, str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", k) and isinstance(v, str) and "\x00" not in v
            for k, v in value.items()):
        raise _bad(field, "give an object of NAME: 'value' strings (names: letters, digits, '_').")
    return {k: v for k, v in value.items() if not k.startswith("NVIDIA_")}


def signal(body: Mapping[str, Any], default: str = "SIGTERM") -> str | int:
    """A signal the host knows, by name (``SIGINT``) or number (1-64)."""
    value = body.get("signal", default)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64:
        return value
    if isinstance(value, str) and value.startswith("SIG") and isinstance(getattr(signal_module, value, None), int):
        return value
    raise _bad("signal", "give a signal name such as 'SIGINT' or 'SIGTERM', or a number from 1 to 64.")


def tail(body: Mapping[str, Any]) -> int | str:
    value = body.get("tail", "all")
    if value == "all":
        return "all"
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**7:
        raise _bad("tail", "give 'all' or a number of lines.")
    return value

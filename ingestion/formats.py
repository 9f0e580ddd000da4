"""Date/timestamp formats: one strftime spelling in the config, translated for each engine.

DuckDB parses with strptime (`%d/%m/%Y`), Spark with Java DateTimeFormatter patterns (`dd/MM/yyyy`).
Each directive also gives a fixed-width regex, which both engines check before parsing: their parsers
differ in leniency (one- vs two-digit days), the regex does not.
"""

from __future__ import annotations

import re

# strftime directive → (Java pattern, regex)
_DIRECTIVES: dict[str, tuple[str, str]] = {
    "Y": ("yyyy", "[0-9]{4}"),
    "y": ("yy", "[0-9]{2}"),
    "m": ("MM", "[0-9]{2}"),
    "d": ("dd", "[0-9]{2}"),
    "H": ("HH", "[0-9]{2}"),
    "I": ("hh", "[0-9]{2}"),
    "M": ("mm", "[0-9]{2}"),
    "S": ("ss", "[0-9]{2}"),
    "f": ("SSSSSS", "[0-9]{6}"),
    "p": ("a", "(AM|PM)"),
    "b": ("MMM", "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"),
    "z": ("XX", "(Z|[+-][0-9]{4})"),
}


def _tokens(fmt: str) -> list[tuple[str, str]]:
    """Split a strftime format into ('directive', 'Y') and ('literal', '/') tokens."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%":
            if i + 1 >= len(fmt):
                raise ValueError(f"format {fmt!r} ends with a lone '%'")
            d = fmt[i + 1]
            if d == "%":
                out.append(("literal", "%"))
            elif d in _DIRECTIVES:
                out.append(("directive", d))
            else:
                raise ValueError(
                    f"format {fmt!r}: %{d} is not supported; use %Y %y %m %d %H %I %M %S %f %p %b %z"
                )
            i += 2
        else:
            out.append(("literal", fmt[i]))
            i += 1
    return out


def to_java_pattern(fmt: str) -> str:
    """The Java DateTimeFormatter pattern of a strftime format (`%d/%m/%Y` → `dd/MM/yyyy`)."""
    out = []
    for kind, value in _tokens(fmt):
        if kind == "directive":
            out.append(_DIRECTIVES[value][0])
        elif value.isalpha() or value == "'":
            out.append("'" + value.replace("'", "''") + "'")
        else:
            out.append(value)
    return "".join(out)


def to_regex(fmt: str) -> str:
    """A full-match regex (RE2 and java.util.regex subset) for values written in `fmt`."""
    out = []
    for kind, value in _tokens(fmt):
        out.append(_DIRECTIVES[value][1] if kind == "directive" else re.escape(value))
    return "".join(out)


def has_offset(fmt: str) -> bool:
    """Does the format carry a UTC offset (`%z`), i.e. are its values instants?"""
    return ("directive", "z") in _tokens(fmt)

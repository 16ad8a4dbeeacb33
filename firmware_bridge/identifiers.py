"""C identifiers, string literals, comments and float literals for generated sources."""

import re
import unicodedata

import numpy as np

C_KEYWORDS = frozenset(
    """
    auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef
    union unsigned void volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic
    _Imaginary _Noreturn _Static_assert _Thread_local
    alignas alignof bool complex imaginary noreturn static_assert thread_local
    """.split()
)
"""C99 and C11 keywords, plus macros of C11 standard headers (``bool``, ``alignas``, ``complex``...), some of which C23 made keywords."""

MAX_PREFIX_LENGTH = 40
"""Characters kept of a prefix, so that derived names such as ``PREFIX_quantize_features`` stay readable."""


def sanitize_identifier(text, fallback="model"):
    """Turn any text into a valid, non-reserved C identifier made of ``[A-Za-z0-9_]``.

    Accented letters lose their accent (NFKD), other non-ASCII characters and punctuation become
    underscores, runs of underscores collapse to one, leading and trailing underscores are removed
    (a leading underscore is reserved in C), a leading digit gets ``fallback + "_"`` in front, and
    a C keyword gets ``"_" + fallback`` appended (``int`` becomes ``int_model``). Empty results become ``fallback``.
    """
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    identifier = re.sub(r"[^A-Za-z0-9_]", "_", ascii_text)
    identifier = re.sub(r"_+", "_", identifier).strip("_")
    identifier = identifier[:MAX_PREFIX_LENGTH].rstrip("_")

    if not identifier:
        return fallback
    if identifier[0].isdigit():
        identifier = f"{fallback}_{identifier}"
    if identifier in C_KEYWORDS:
        identifier = f"{identifier}_{fallback}"
    return identifier


def unique_macro_names(texts, prefix):
    """Map each text to an upper-case macro name ``PREFIX_TEXT``, adding ``_2``, ``_3``... on clashes."""
    names = []
    used = set()
    for text in texts:
        base = f"{prefix}_{sanitize_identifier(text, fallback='X').upper()}"
        name = base
        counter = 2
        while name in used:
            name = f"{base}_{counter}"
            counter += 1
        used.add(name)
        names.append(name)
    return names


def c_string(text):
    """Return ``text`` as a C string literal in UTF-8, with octal escapes for bytes outside printable ASCII.

    Octal escapes have at most three digits, so a following digit never joins the escape,
    unlike ``\\x`` escapes, which would swallow a following hex digit.
    """
    parts = []
    for byte in str(text).encode("utf-8"):
        char = chr(byte)
        if char in ('"', "\\"):
            parts.append("\\" + char)
        elif char == "?":
            parts.append("\\?")  # avoids trigraphs such as ??= in C99
        elif 0x20 <= byte < 0x7F:
            parts.append(char)
        else:
            parts.append(f"\\{byte:03o}")
    return '"' + "".join(parts) + '"'


def comment_text(text):
    """Return ``text`` safe inside a ``/* */`` comment: printable ASCII, with no ``*/`` or ``/*``."""
    ascii_text = "".join(char if 0x20 <= ord(char) < 0x7F else "?" for char in str(text))
    return ascii_text.replace("*/", "* /").replace("/*", "/ *")


def c_float(value):
    """Return a float32 value as a C ``float`` literal that reads back to the same bits.

    The text is NumPy's shortest decimal that rounds back to this float32 value. A compiler that
    rounds decimal constants to the nearest ``float`` (the ``f`` suffix), as GCC does, reads it
    back to the same bits. The tests check this with gcc.

    Raises:
        ValueError: The value is NaN or infinite, which has no portable C99 literal.
    """
    number = np.float32(value)
    if not np.isfinite(number):
        raise ValueError(f"{value!r} has no finite float32 value")
    return np.format_float_scientific(number, unique=True, trim="0") + "f"

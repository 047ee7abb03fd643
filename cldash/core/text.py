"""Text that users write and read: control characters kept out of it, and "a" or "an" before a word.

A run's name (like every text option) is printed by `cldash list` and `cldash show` and shown on the
dashboard. An ANSI escape or a line break in it would recolour the terminal or break the table, so a
new value with one is refused (cldash.core.options checks every text option) and a value already in a store
(written by an older cldash, or straight into the database) is printed with its control characters
escaped ("\\x1b[31m", "\\n"), as Python's repr writes them.
"""

from __future__ import annotations

import unicodedata

# Cc: C0 and C1 controls (escape, newline, tab, DEL...); Zl, Zp: the Unicode line and paragraph separators
CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")


def is_control(char: str) -> bool:
    return unicodedata.category(char) in CONTROL_CATEGORIES


def has_control_characters(text: str) -> bool:
    return any(is_control(c) for c in text)


def printable(text) -> str:
    """`text` with each control character written as its escape (a newline as \\n, ESC as \\x1b)."""
    text = "" if text is None else str(text)
    if not has_control_characters(text):
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if is_control(c) else c for c in text)


def with_article(word: str) -> str:
    """'an image-classification', 'a causal-lm': the article by the word's first letter (the words
    cldash puts after an article are model kinds and class names, none of which starts with a
    vowel that sounds like a consonant)."""
    return f"{'an' if word[:1].lower() in ('a', 'e', 'i', 'o', 'u') else 'a'} {word}"


def id_ranges(ids: list[int]) -> str:
    """'#4', '#4 to #9' (consecutive ids) or '#4, #7, #9': run ids as the CLI and the dashboard print them."""
    return f"#{ids[0]}" if len(ids) == 1 else f"#{ids[0]} to #{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) \
        else ", ".join(f"#{i}" for i in ids)

"""Stored text made inert before it reaches a terminal: what a pusher, a commit or a build wrote is data, not commands.

A terminal obeys control characters wherever they come from: `ESC [2J` clears the screen, an OSC
sequence sets the window title or writes a hyperlink (some terminals also answer queries, typing
the answer into the operator's shell), a carriage return or a backspace hides what came before,
and a newline forges a row of the audit trail. Everything the CLI prints from the store or from
the service's replies goes through terminal_text first.
"""

from __future__ import annotations

import re

_CSI = re.compile(r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]")
"""A control sequence (colours, cursor moves, screen clears): ESC [ or the one-byte C1 CSI, parameters, a final byte."""

_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""Directional marks, embeddings, overrides and isolates: they reorder what follows on the line (Trojan Source)."""

_UNSAFE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029{_BIDI}]")
"""C0 controls (ESC among them), DEL, C1 controls, the Unicode line and paragraph separators, bidi controls."""

_UNSAFE_IN_LINES = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\u2028\\u2029{_BIDI}]")
"""As _UNSAFE, less tab and newline: the layout of a log's lines, which they keep."""


def terminal_text(text: str, multiline: bool = False) -> str:
    """text with every control character written out (`\\x1b`, `\\x07`, `\\u202e`): shown, never obeyed.

    One-line text (a name, a reason, a table cell, the default) keeps no newline or tab either: a
    newline in a pusher's name would print as a forged row of its own. multiline: a log's lines
    and messages of several lines keep their newlines and tabs, and control sequences (a build's
    colours and cursor moves) are dropped, since written out they would bury the log in noise.
    """
    if multiline:
        return _UNSAFE_IN_LINES.sub(_written_out, _CSI.sub("", text))
    return _UNSAFE.sub(_written_out, text)


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
"""The controls written out as Python writes them, for a reader who meets them in a name or a reason."""


def _written_out(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

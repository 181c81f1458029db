"""Collect the shell commands shown in README.md and docs/*.md, for the tests that parse and run them.

``shell_lines`` returns each logical line of the fenced shell code blocks (any block but python, yaml, json,
text and the like), with backslash continuations joined. ``doc_commands`` picks the ``medgan`` commands out of
those lines: a line starting with ``medgan `` (also after a ``$ `` prompt), a part of an ``&&``, ``||``, ``;`` or
``|`` chain, and ``python -m medgan ...`` or ``torchrun ... -m medgan ...``. ``#`` comments are dropped.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NON_SHELL_LANGUAGES = {"python", "py", "yaml", "yml", "json", "text", "txt", "csv", "toml", "ini", "markdown", "md"}
SEPARATORS = {"&&", "||", ";", "|"}
MEDGAN_WORD = re.compile(r"(^|[\s;&|$])medgan(\s|$)")
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")


@dataclass(frozen=True)
class DocCommand:
    """One medgan command found in a doc: where it starts, the original text and the arguments after ``medgan``."""

    path: Path
    line: int
    text: str
    args: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def shell_lines(path: Path) -> list[tuple[int, str]]:
    """Return (line number, logical line) for each line of the shell code blocks, backslash continuations joined."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    shell_block = False
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(raw)
        if fence is None and match:
            fence = match.group(1)
            shell_block = match.group(2).lower() not in NON_SHELL_LANGUAGES
            continue
        if fence is not None and raw.strip().startswith(fence):
            fence = None
            continue
        if fence is None or not shell_block:
            continue

        start, text = pending if pending else (number, "")
        text = f"{text} {raw.strip()}" if text else raw.strip()
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        pending = None
        lines.append((start, text))
    return lines


def split_tokens(text: str) -> list[str]:
    """Split a shell line into words as a POSIX shell would, with ``;``, ``&`` and ``|`` runs as their own words."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    return list(lexer)


def split_segments(tokens: list[str]) -> list[list[str]]:
    """Split the words of a shell line at ``&&``, ``||``, ``;`` and ``|`` into the commands of its chain."""
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token in SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    return [segment for segment in segments if segment]


def medgan_args(segment: list[str]) -> list[str] | None:
    """Return the arguments after ``medgan`` when the segment runs medgan, else None."""
    if segment and segment[0] == "$":
        segment = segment[1:]
    if segment and segment[0] == "medgan":
        return segment[1:]
    for index in range(len(segment) - 1):
        if segment[index] == "-m" and segment[index + 1] == "medgan":
            return segment[index + 2:]
    return None


def doc_commands() -> list[DocCommand]:
    commands = []
    for path in DOC_FILES:
        for line, text in shell_lines(path):
            if text.startswith("$ "):
                text = text[2:]
            if not MEDGAN_WORD.search(text):
                continue
            try:
                tokens = split_tokens(text)
            except ValueError as error:
                raise ValueError(f"{path.relative_to(REPO)}:{line}: cannot split {text!r} into words: {error}") from error
            for segment in split_segments(tokens):
                args = medgan_args(segment)
                if args is not None:
                    commands.append(DocCommand(path, line, text, tuple(args)))
    return commands

"""The examples of the README and the docs that are marked to run (see docs/contributing.md).

A block marked ``<!-- run -->`` is either a ``sh``/``bash`` script (must exit 0) or a ``console``
session (``$ `` commands, each followed by its expected output). All marked blocks of one file
become one bash script, run in one shell, so variables carry from block to block; each
command's output is cut out of the shell's output by markers and compared with what the page
shows, ``…`` standing for any text within a line and a ``...`` line for any number of lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MARK = "<!-- run -->"
SHELLS = ("sh", "bash", "shell")
_FENCE = re.compile(r"^(`{3,})\s*([\w-]*)")
_MARKER = "@@atrium-example@@"


@dataclass
class Command:
    """One ``$`` command of a console block and the output the page shows for it."""

    text: str
    expected: list[str]


@dataclass
class Block:
    """A marked fenced block: where it is, its kind, and its content."""

    path: Path
    line: int
    kind: str  # "sh" or "console"
    body: str
    commands: list[Command] = field(default_factory=list)

    @property
    def where(self) -> str:
        """``README.md:42``."""
        return f"{self.path}:{self.line}"


def _console_commands(body: str) -> list[Command]:
    commands: list[Command] = []
    lines = body.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            raise ValueError(f"console block: output before any command: {line!r}")
        text = [line[2:]]
        while text[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            text.append(lines[i])
        i += 1
        expected: list[str] = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        while expected and not expected[-1].strip():
            expected.pop()
        commands.append(Command("\n".join(text), expected))
    return commands


def marked_blocks(path: Path, root: Path) -> list[Block]:
    """Every block of ``path`` marked to run, in order."""
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != MARK:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        fence = _FENCE.match(lines[j]) if j < len(lines) else None
        where = f"{path.relative_to(root)}:{i + 1}"
        if fence is None:
            raise ValueError(f"{where}: {MARK} must come right before a fenced block")
        language = fence.group(2)
        if language not in (*SHELLS, "console"):
            raise ValueError(f"{where}: cannot run a {language or 'plain'!r} block")
        end = j + 1
        while end < len(lines) and not lines[end].startswith(fence.group(1)):
            end += 1
        body = "\n".join(lines[j + 1 : end]).rstrip("\n")
        kind = "console" if language == "console" else "sh"
        block = Block(path.relative_to(root), j + 1, kind, body)
        if block.kind == "console":
            block.commands = _console_commands(body)
        blocks.append(block)
        i = end + 1
    return blocks


def script(blocks: list[Block], rewrite: dict[str, str]) -> str:
    """One bash script running every block; output delimited by numbered markers."""

    def local(text: str) -> str:
        for old, new in rewrite.items():
            text = text.replace(old, new)
        return text

    parts = ["exec 2>&1", "set -o pipefail"]
    step = 0
    for block in blocks:
        if block.kind == "sh":
            # A failing command stops the script: the last marker seen names the block.
            parts += ["set -e", local(block.body), "set +e"]
            parts.append(f"printf '\\n{_MARKER}{step}\\n'")
            step += 1
            continue
        for command in block.commands:
            parts.append(local(command.text))
            parts.append(f"printf '\\n{_MARKER}{step}\\n'")
            step += 1
    return "\n".join(parts) + "\n"


def outputs(text: str) -> list[str]:
    """The output of each step, in order (the marker's own newline removed)."""
    pieces = re.split(rf"\n{re.escape(_MARKER)}\d+\n", text)
    return pieces[:-1]  # what follows the last marker belongs to no step


def expected_pattern(expected: list[str]) -> re.Pattern[str]:
    """A regex for the shown output: ``…`` any text in a line, ``...`` any lines."""
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(p) for p in line.rstrip().split("…")) + r"\n")
    return re.compile("".join(parts))


def normalise(output: str) -> str:
    """Trailing spaces and trailing blank lines do not count."""
    lines = [line.rstrip() for line in output.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "".join(f"{line}\n" for line in lines)


def mismatches(blocks: list[Block], output: str, rewrite: dict[str, str]) -> list[str]:
    """What differs from the pages, one message per command; empty when all match."""
    got = outputs(output)
    problems: list[str] = []
    step = 0
    for block in blocks:
        if block.kind == "sh":
            step += 1
            continue
        for command in block.commands:
            if step >= len(got):
                return [*problems, f"{block.where}: `{command.text}` never finished"]
            actual = normalise(got[step])
            shown = [_unrewrite(line, rewrite) for line in command.expected]
            if not expected_pattern(shown).fullmatch(_unrewrite(actual, rewrite)):
                problems.append(
                    f"{block.where}: `{command.text}`\n--- the page shows:\n"
                    + "\n".join(command.expected)
                    + "\n--- it printed:\n"
                    + _unrewrite(actual, rewrite)
                )
            step += 1
    return problems


def _unrewrite(text: str, rewrite: dict[str, str]) -> str:
    # Output mentions the real server's address; the page shows the reader's.
    for old, new in rewrite.items():
        text = text.replace(new, old)
    return text


def steps_done(output: str) -> int:
    """How many steps finished (to name the block a failing script stopped in)."""
    return len(outputs(output))


def block_of_step(blocks: list[Block], step: int) -> Block | None:
    """The block the ``step``-th step belongs to."""
    for block in blocks:
        size = 1 if block.kind == "sh" else len(block.commands)
        if step < size:
            return block
        step -= size
    return None

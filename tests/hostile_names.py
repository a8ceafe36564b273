"""Hostile names for fuzz tests: file and folder names and model labels that a table, a progress bar,
an error line or an output file could misread (rich markup, terminal escapes, control characters,
bytes that are not UTF-8, CSV quoting). Importable on its own, so that other fuzz corpora (forged
headers, mutants) can be given these names too: `hostile_copies(folder, clip)` writes a copy of a
clip under each name, `hostile_model(folder)` a demo-motion model whose name and labels are hostile.
"""

from __future__ import annotations

import os
from pathlib import Path

# File names (bytes: not all are UTF-8), each one path component; `[/]` (a closing tag) in a path needs
# a folder named `c[` holding `]d.mp4` (HOSTILE_NESTED): no file name holds a slash.
HOSTILE_FILE_NAMES: tuple[bytes, ...] = (
    b"[bold red]x.mp4",  # rich markup: must show as written, not as a red `x.mp4`
    b"[link=https:example.com]click.mp4",
    b"[blink][reverse]x.mp4",
    b"\\[escaped].mp4",  # a backslash before markup
    b"\x1b[2J\x1b[Hclear.mp4",  # clear screen, cursor home
    b"\x1b]0;pwned\x07title.mp4",  # set the window title
    b"\x1b[31mred\x1b[0m.mp4",
    b"bidi\xe2\x80\xaeevil.mp4",  # U+202E right-to-left override
    b"new\nline.mp4",
    b"carriage\rreturn.mp4",
    b"tab\there.mp4",
    b"bell\x07.mp4",
    b"not-utf8-\xff\xfe.mp4",
    b"latin1-caf\xe9.mp4",
    b'quote",comma.mp4',  # CSV quoting
    "日本語-🎬.mp4".encode(),
)
HOSTILE_NESTED: tuple[bytes, bytes] = (b"c[", b"]d.mp4")  # the path c[/]d.mp4

# A model's name and labels (JSON strings: any Unicode), demo-motion's four classes.
HOSTILE_MODEL_NAME = "demo[/]\x1b[31m"
HOSTILE_LABELS: tuple[str, ...] = ("[/]", "[bold red]right", "\x1b]0;pwned\x07up", "down\n\x1b[2J")


def hostile_copies(folder: Path, clip: Path) -> list[str]:
    """Copy `clip` under every hostile name into `folder` (and folder/c[/]d.mp4); returns the paths as
    vidcls names them when it lists `folder` (os.fsdecode: surrogates for bytes that are not UTF-8)."""
    os.makedirs(folder, exist_ok=True)
    data = clip.read_bytes()
    raw = os.fsencode(folder)
    paths = [os.path.join(raw, name) for name in HOSTILE_FILE_NAMES]
    os.makedirs(os.path.join(raw, HOSTILE_NESTED[0]), exist_ok=True)
    paths.append(os.path.join(raw, *HOSTILE_NESTED))
    for path in paths:
        with open(path, "wb") as out:
            out.write(data)
    return sorted((os.fsdecode(p) for p in paths), key=lambda p: os.fsencode(p))


def hostile_model(folder: Path) -> Path:
    """demo-motion saved as a model directory whose name and labels are HOSTILE_MODEL_NAME and
    HOSTILE_LABELS (the label of class i replaces demo-motion's label i)."""
    import dataclasses

    import vidcls
    from vidcls.zoo.modeldir import save_model_dir

    loaded = vidcls.load_model("demo-motion")
    card = dataclasses.replace(loaded.card, name=HOSTILE_MODEL_NAME, labels=list(HOSTILE_LABELS))
    return save_model_dir(Path(folder), card, loaded.module)

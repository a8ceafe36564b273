"""Downloads bounded while they stream, from the Hub and from plain URLs alike.

Both go through huggingface_hub's own transfer (`file_download.http_get`: its HTTP client,
retries, Range resumes, proxies), which takes a progress-bar class (`tqdm_class`, also an
argument of `hf_hub_download`). That class is the library's one hook into the stream: http_get
makes the bar with the size the server announces (Content-Length, else the Hub's HEAD size)
before it writes the first byte, and calls `update(len(chunk))` before it writes each chunk.
So a bar that raises is the bound, with no copy of the library's HTTP code: a download is
refused before its first byte when the announced size is above the file's bound or the free
disk space, and stopped, the chunk unwritten, when it goes past the bound or the disk comes
within SPARE_BYTES of full.

Over Xet storage (hf_xet, used by hf_hub_download when the Hub's HEAD answer names a Xet hash)
the bar is made with the HEAD's size before the transfer, so that check holds too; but hf_xet
1.8 logs an exception raised in a progress update ("Python exception updating progress") and
goes on, so the refusals are also kept on the class (`refused`) for the caller to act on once
the call returns.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from vidcls.errors import VidclsError

MAX_BYTES = 16 << 30  # the largest weight file fetched (the zoo's largest checkpoints: about 1 GB)
SPARE_BYTES = 64 << 20  # left free on the disk, beside what a download is expected to take
# config.json, preprocessor_config.json and the tokenizer files a text side needs: the largest,
# CLIP's tokenizer.json, is 2.2 MB (vocab.json 0.9 MB, merges.txt 0.5 MB, a config a few kB), so
# 64 MiB leaves 30 times that for a larger vocabulary and still stops a side file that never ends.
SIDE_FILE_BYTES = 64 << 20


class DownloadRefused(VidclsError):
    """A download stopped because it would break a bound; its partial file cannot be resumed."""


def bounded_bar(limit: int, folder: Path, label: str) -> type:
    """huggingface_hub's progress bar, refusing the download of `label` (what the messages name)
    past `limit` bytes or past the free space of `folder` (where the file is written, less
    SPARE_BYTES), announced or received."""
    from huggingface_hub.utils import tqdm

    refusals: list[DownloadRefused] = []

    def refuse(problem: str) -> DownloadRefused:
        refusals.append(DownloadRefused(f"{label}: {problem}"))
        return refusals[-1]

    class BoundedBar(tqdm):
        refused = refusals

        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
            if total is not None and total > limit:
                raise refuse(f"the server announces {total:,} bytes, more than the {limit:,} expected of this file")
            free = shutil.disk_usage(folder).free
            if total is not None and total - initial > free - SPARE_BYTES:
                raise refuse(f"the server announces {total:,} bytes and {folder} has {free:,} bytes free")
            self.received = initial  # counted here: a disabled tqdm bar counts nothing
            super().__init__(*args, total=total, initial=initial, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self.received += n or 0
            if self.received > limit:
                raise refuse(f"the server sent more than the {limit:,} bytes expected of this file; stopped there")
            if (n or 0) > 0 and shutil.disk_usage(folder).free - n < SPARE_BYTES:
                raise refuse(f"the disk of {folder} is full ({self.received:,} bytes received)")
            return super().update(n)

    return BoundedBar

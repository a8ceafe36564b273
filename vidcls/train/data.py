"""Training data: which videos with which labels, and a Dataset that decodes them in DataLoader workers.

DATA is either a folder with one sub-folder per class, or a list file: `path label` lines
(Kinetics / UCF101 / Something-Something style text lists) or a CSV with a header. The class
list is fixed by the training data; validation data may only use those classes.

A video that fails to decode never raises out of the Dataset: it comes back as a failed
item with a one-line reason, so the loop can skip it, count it and report it, and one bad
file in a million never costs an epoch.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path, PurePath

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from vidcls.errors import VidclsError, first_line, printable
from vidcls.inference.engine import Recipe, decode_views, init_worker
from vidcls.video.decode import probe, read_frames
from vidcls.video.inputs import VideoInput, resolve_path
from vidcls.video.sampling import random_clip_indices
from vidcls.video.transforms import train_view
from vidcls.zoo.modeldir import InputSpec

PATH_COLUMNS = ("path", "video", "video_path", "filename", "file")
LABEL_COLUMNS = ("label", "class", "category")


@dataclass(frozen=True)
class Sample:
    """One training or validation video and its class name."""

    path: Path
    label: str


# ----------------------------------------------------------------------------- reading DATA


def read_samples(source: str | Path) -> list[Sample]:
    """The samples of a class-folder tree or a list file (see the module docstring)."""
    source = Path(source).expanduser()
    if source.is_dir():
        samples = folder_samples(source)
    elif source.is_file():
        samples = list_samples(source)
    else:
        raise VidclsError(f"{source}: no such data folder or list file")
    if not samples:
        raise VidclsError(f"{source}: no videos found")
    return samples


def folder_samples(root: Path) -> list[Sample]:
    """ROOT/CLASS/**/file -> (file, CLASS), sorted; hidden files and folders are ignored.

    Every other file counts as a sample, whatever its extension: a stray file in a class
    folder is then reported as undecodable instead of silently shrinking the class.
    """
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise VidclsError(f"{root}: no class sub-folders (expected {root}/CLASS/VIDEO)")
    return [Sample(path, folder.name) for folder in classes for path in sorted(folder.rglob("*"))
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)]


def list_samples(list_file: Path) -> list[Sample]:
    """Samples of a `.csv` list (header with a path and a label column) or a `path label` text list.

    Relative paths are resolved against the list file's folder, so a dataset folder can be
    moved as a whole.
    """
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise VidclsError(f"{list_file}: cannot read list file ({exc})") from None
    rows = csv_rows(text, list_file) if list_file.suffix.lower() == ".csv" else text_rows(text, list_file)
    return [Sample(resolve_path(path, list_file.parent), label) for path, label in rows]


def text_rows(text: str, name: Path) -> Iterator[tuple[str, str]]:
    """`path label` lines (see split_entry), so Kinetics names with spaces and paths with spaces work.

    A line with a path only takes its label from the path's folder (UCF101 test lists);
    blank lines and `#` comments are skipped.
    """
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path, label = split_entry(line, name.parent)
        label = label or PurePath(path).parent.name
        if not label:
            raise VidclsError(f"{name}:{number}: no label (write `path label`, or put the video "
                              f"in a folder named after its class)")
        yield path, label


def split_entry(line: str, base: Path) -> tuple[str, str]:
    """One `path label` line -> (path, label; "" if none).

    With a tab, the path is what comes before it and the label what comes after (both may
    hold spaces). Otherwise a space separates them, and either may hold spaces too: the path
    is the longest run of leading words that names an existing file (`my clip.mp4 left`), else
    the first word (`x.mp4 air drumming`, the Kinetics lists, and files that are missing).
    """
    if "\t" in line:
        path, _, label = line.partition("\t")
        return path.strip(), label.strip()
    words = line.split(" ")
    for cut in range(len(words) - 1, 1, -1):
        path = " ".join(words[:cut]).rstrip()
        if resolve_path(path, base).is_file():
            return path, " ".join(words[cut:]).strip()
    path, *rest = line.split(maxsplit=1)
    return path, rest[0] if rest else ""


def csv_rows(text: str, name: Path) -> Iterator[tuple[str, str]]:
    """Rows of a CSV whose header names a path column and a label column (PATH_COLUMNS, LABEL_COLUMNS)."""
    try:
        yield from _csv_rows(csv.DictReader(io.StringIO(text, newline="")), name)
    except csv.Error as exc:
        raise VidclsError(f"{printable(name)}: not a readable CSV ({first_line(exc)})") from None


def _csv_rows(reader: csv.DictReader, name: Path) -> Iterator[tuple[str, str]]:
    header = {column.strip().lower(): column for column in reader.fieldnames or []}
    path_column = next((header[c] for c in PATH_COLUMNS if c in header), None)
    label_column = next((header[c] for c in LABEL_COLUMNS if c in header), None)
    if path_column is None or label_column is None:
        raise VidclsError(f"{name}: the CSV header needs a path column ({', '.join(PATH_COLUMNS)}) and a "
                          f"label column ({', '.join(LABEL_COLUMNS)}); found: {', '.join(header) or 'nothing'}")
    for row in reader:
        number = reader.line_num  # the row's last line: a quoted field may span several
        path, label = (row.get(path_column) or "").strip(), (row.get(label_column) or "").strip()
        if not path or not label:
            raise VidclsError(f"{name}:{number}: empty path or label")
        yield path, label




def class_list(labels: Iterable[str]) -> list[str]:
    """Sorted distinct class names; numerically when all are integers, so label "10" gets index 10."""
    distinct = set(labels)
    numeric = all(label.isdigit() for label in distinct)
    return sorted(distinct, key=int if numeric else str)


def label_indices(samples: Sequence[Sample], classes: Sequence[str], what: str) -> list[int]:
    """Class index of every sample; a label the training data does not have is an error naming it."""
    index = {label: i for i, label in enumerate(classes)}
    unseen = sorted({s.label for s in samples} - set(index))
    if unseen:
        shown = ", ".join(repr(label) for label in unseen[:5]) + (" ..." if len(unseen) > 5 else "")
        raise VidclsError(f"{what} data has label(s) that the training data does not have: {shown} "
                          f"({len(unseen)} in all; the {len(classes)} training classes are fixed by --train)")
    return [index[s.label] for s in samples]


def record_failures(known: dict[str, str], failures: Iterable[tuple[str, str]], total: int, max_fraction: float,
                    split: str, warn: Callable[[str], None]) -> None:
    """Add (path, reason) failures to `known`; warn once per video; stop past the limit.

    The limit is checked against the whole split (`total` videos), so it trips as soon as the share
    of bad videos is certain to exceed --max-bad-fraction, usually early in the first epoch.
    """
    for path, reason in failures:
        if path not in known:
            known[path] = reason
            warn(f"skipped {path}: {reason}")
    if len(known) > max_fraction * total:
        examples = "; ".join(f"{p}: {r}" for p, r in list(known.items())[:3])
        raise VidclsError(f"{len(known)} of {total} {split} videos could not be decoded, more than "
                          f"--max-bad-fraction {max_fraction:g} allows ({examples}"
                          f"{' ...' if len(known) > 3 else ''}); fix the data or raise the limit")


# ----------------------------------------------------------------------------- the Dataset


def derive_seed(*parts: int) -> int:
    """A seed from integers, e.g. (run seed, epoch, sample): augmentation then depends on nothing else.

    Not on worker count or order, which is what makes two runs, and a run resumed half-way,
    see the very same clips. A hash of the numbers' text, stable across processes and versions.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch seeds must fit in a signed 64-bit integer


@dataclass
class Item:
    """What the Dataset returns for one index: the video tensor, or the reason it failed."""

    path: str
    label: int
    video: torch.Tensor | None
    error: str | None = None


@dataclass
class Batch:
    """Collated items: the decodable videos and their labels, plus (path, reason) for the failures."""

    videos: torch.Tensor | None  # (B, 3, T, S, S) for training, (B, views, 3, T, S, S) for eval
    labels: torch.Tensor
    failures: list[tuple[str, str]]

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) for faster host-to-GPU copies."""
        videos = self.videos.pin_memory() if self.videos is not None else None
        return Batch(videos, self.labels.pin_memory(), self.failures)


def collate(items: list[Item]) -> Batch:
    good = [item for item in items if item.video is not None]
    videos = torch.stack([item.video for item in good]) if good else None
    labels = torch.tensor([item.label for item in good], dtype=torch.long)
    return Batch(videos, labels, [(item.path, item.error or "") for item in items if item.video is None])


class VideoClipDataset(Dataset):
    """Decodes and preprocesses one video per item, in whichever process asks (a DataLoader worker).

    train=True: one random clip per video (random temporal position for the model's dense or
    segment recipe, scale-jittered random crop, optional flip), different every epoch.
    train=False: the model's test-time views (clips x crops), as `vidcls predict` sees them.
    shuffle_frames: a control experiment; each clip's frames in a random order, so a model
    can only use what single frames show (a task that needs time falls to chance).
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], spec: InputSpec, train: bool,
                 seed: int = 0, flip: bool = True, shuffle_frames: bool = False,
                 scale: tuple[float, float] = (1.0, 1.25)) -> None:
        if len(paths) != len(labels):
            raise ValueError("paths and labels differ in length")
        self.paths, self.labels, self.spec = list(paths), list(labels), spec
        self.train, self.seed, self.flip = train, seed, flip
        self.shuffle_frames, self.scale = shuffle_frames, scale
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's augmentation; call before iterating a DataLoader over this dataset."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch if self.train else -1, index))
        path, label = str(self.paths[index]), self.labels[index]
        try:
            video = self._train_view(index, generator) if self.train else self._eval_views(index, generator)
        except VidclsError as exc:
            return Item(path, label, None, str(exc))
        except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not end the epoch
            return Item(path, label, None, f"could not decode ({type(exc).__name__}: {first_line(exc)})")
        return Item(path, label, video)

    def _train_view(self, index: int, generator: torch.Generator) -> torch.Tensor:
        spec, path = self.spec, self.paths[index]
        info = probe(path)
        indices = random_clip_indices(info.num_frames, spec.frames, spec.stride, spec.sampling, generator)
        frames = read_frames(path, indices)
        if self.shuffle_frames:
            frames = frames[torch.randperm(len(frames), generator=generator)]
        return train_view(frames, spec.size, spec.mean, spec.std, generator, spec.resize, self.scale, self.flip,
                          spec.aspect)

    def _eval_views(self, index: int, generator: torch.Generator) -> torch.Tensor:
        """The test-time views exactly as `vidcls predict` cuts them (engine.decode_views: frames fitted
        to the model as they are decoded, so memory stays bounded by the model's size, not the video's)."""
        path = str(self.paths[index])
        decoded = decode_views(index, VideoInput(path, path), Recipe.of(self.spec))
        if decoded.error is not None:
            raise VidclsError(decoded.error)
        views = decoded.views
        if self.shuffle_frames:
            views = views[:, :, torch.randperm(views.shape[2], generator=generator)]
        return views


# ----------------------------------------------------------------------------- loaders


class EpochSampler(Sampler[int]):
    """This process's share of a shuffled epoch (DistributedSampler order), optionally from part-way.

    The order depends only on (seed, epoch), so a run resumed after an interrupt skips
    exactly the samples it had already trained on.
    """

    def __init__(self, size: int, rank: int, world_size: int, seed: int) -> None:
        self.inner = DistributedSampler(range(size), num_replicas=world_size, rank=rank, shuffle=True,
                                        seed=seed, drop_last=False)
        self.skip = 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def make_loader(dataset: VideoClipDataset, batch_size: int, sampler: Iterable[int], workers: int,
                pin_memory: bool = False) -> DataLoader:
    """Workers set up as predict's are (inference.engine.init_worker): Ctrl-C and SIGTERM left to the main
    process, which checkpoints at a safe point, and one torch and decoder thread each."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, pin_memory=pin_memory,
                      worker_init_fn=init_worker if workers else None)

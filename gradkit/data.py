"""CIFAR-10 as uint8 tensors, read from wherever it is, decoded once and cached; and a small
synthetic stand-in for unit tests.

Where the data comes from: the first given of the ``root`` argument, ``$GRADKIT_DATA`` and
``~/.cache/gradkit`` is the *data root*. In it :func:`cifar10` accepts

- ``cifar-10-batches-py/``: torchvision's download of the original (read without torchvision),
- image folders ``train/<class>/*.png|jpg`` and ``test/<class>/...``, directly or one folder down
  (e.g. ``cifar10-jpeg/train/airplane/0001.jpg``),
- a ``.tar.gz`` of such image folders (or torchvision's own archive): the root itself or a file
  in it, read as a stream without extracting it.

The decoded arrays go into one file in ``$GRADKIT_CACHE`` (default ``~/.cache/gradkit``), keyed
by the source's path and its files' sizes and modification times, with a checksum that is checked
on every load, so only the first call decodes and a damaged cache is rebuilt, never used.

Nothing in the data can run code: batch files (pickles) are read only when their MD5 is the
published one, through an unpickler that builds nothing but arrays, lists and bytes; image sizes
are read from the file header before any pixel is decoded.

>>> data = synthetic(n=20, n_test=10)
>>> data.train_x.shape, data.train_x.dtype, data.name
(torch.Size([20, 3, 32, 32]), torch.uint8, 'synthetic (not CIFAR-10)')
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import stat
import tarfile
import tempfile
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .checks import check_bool, check_int, check_seed
from .runtime import resolve_device

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
TORCHVISION_DIR = "cifar-10-batches-py"
TORCHVISION_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
# The published MD5 of each original batch file (torchvision's CIFAR10 checks the same ones). A batch
# file is a pickle, and unpickling runs whatever the file says: it is checked before it is read.
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
SPLITS = ("train", "test")
ARRAY_KEYS = ("train_x", "train_y", "test_x", "test_y")
# A 32x32 image file is a few kB; anything larger is not one, and is not read into memory.
MAX_IMAGE_BYTES = 1 << 20
MAX_BATCH_BYTES = 64 << 20
CACHE_VERSION = 2
# The validation split is drawn with its own fixed seed, so runs of every seed validate on the same images.
VAL_SEED = 12345
LAYOUTS = (
    f"  - {TORCHVISION_DIR}/ (torchvision's download of the original),\n"
    "  - image folders train/<class>/*.png|jpg and test/<class>/*.png|jpg, in the root or one folder down,\n"
    "  - a .tar.gz archive of such image folders: the root itself, or a file in it."
)


@dataclass(repr=False)
class Dataset:
    """A labelled image classification set held as uint8 tensors.

    ``mean`` and ``std`` are per-channel statistics of the training images scaled to [0, 1]:
    mean_c = sum(x_c) / (N * 32 * 32 * 255), std_c = sqrt(mean(x_c^2) - mean_c^2) (population).
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    name: str
    synthetic: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    val_x: Tensor | None = None  # held out from the training images: choose settings on it, not on test
    val_y: Tensor | None = None

    def __repr__(self) -> str:
        val = f", val {tuple(self.val_x.shape)}" if self.val_x is not None else ""
        return (
            f"Dataset({self.name!r}: train {tuple(self.train_x.shape)}{val}, test {tuple(self.test_x.shape)}, "
            f"{len(self.classes)} classes, {self.train_x.device})"
        )

    @property
    def n_val(self) -> int:
        """Number of validation images (0 when the set has no validation split)."""
        return 0 if self.val_y is None else int(self.val_y.numel())

    def to(self, device: str | torch.device) -> Dataset:
        """The same data with its tensors on ``device`` (``"auto"``: CUDA when present)."""
        dev = resolve_device(device)
        return replace(
            self, train_x=self.train_x.to(dev), train_y=self.train_y.to(dev),
            test_x=self.test_x.to(dev), test_y=self.test_y.to(dev),
            val_x=None if self.val_x is None else self.val_x.to(dev),
            val_y=None if self.val_y is None else self.val_y.to(dev),
        )


def _mean_std(x: Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and population std of uint8 images (N, 3, H, W), in [0, 1] units.

    From each channel's histogram h over the values v = 0..255 (exact, and faster than a float copy):
    mean = sum(h v) / sum(h) / 255, std = sqrt(sum(h v^2) / sum(h) - (sum(h v) / sum(h))^2) / 255.
    """
    values = torch.arange(256, dtype=torch.float64)
    hist = torch.stack([torch.bincount(x[:, c].reshape(-1).cpu(), minlength=256) for c in range(3)]).double()
    count = hist.sum(dim=1)
    mean = hist @ values / count
    std = (hist @ (values * values) / count - mean**2).clamp_min(0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())  # type: ignore[return-value]


def synthetic(n: int = 512, n_test: int = 256, seed: int = 0, device: str | torch.device = "cpu",
              n_val: int = 0) -> Dataset:
    """A generated 10-class set of 32x32 RGB uint8 images with learnable structure, for tests only.

    Class ``c`` draws stripes at angle ``c * 18`` degrees with a random phase, tinted with the
    class colour, on a random brightness, plus Gaussian noise:
    ``x = clip(128 + b + 40 * colour_c + 50 * colour_c * sin(2 pi / 8 * (u cos a_c + v sin a_c) + phase) + noise)``
    with ``b ~ U(-30, 30)`` and ``noise ~ N(0, 25^2)`` per pixel. Labels are balanced. Anything
    trained on it is labelled ``"synthetic (not CIFAR-10)"``. ``n_val > 0`` adds a validation
    split of that many images drawn like the training ones (after them, so the training images
    do not depend on ``n_val``).

    >>> d = synthetic(n=10, n_test=10, seed=1, n_val=20)
    >>> sorted(d.train_y.tolist()) == list(range(10)), d.synthetic, d.n_val
    (True, True, 20)
    """
    check_int("n", n, 1)
    check_int("n_test", n_test, 1)
    check_int("n_val", n_val, 0)
    check_seed("seed", seed)
    resolve_device(device)  # checked here: a bad device is named before any image is made
    g = torch.Generator().manual_seed(seed)
    # Fixed colours (not seeded) so train and test of any seed share the class structure.
    palette = torch.tensor(
        [[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [1, -1, 1],
         [-1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, -1, -1]], dtype=torch.float32,
    ) * 0.8
    v, u = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")

    def make(count: int) -> tuple[Tensor, Tensor]:
        y = (torch.arange(count) % 10)[torch.randperm(count, generator=g)]
        angle = (y.float() * math.pi / 10)[:, None, None]
        phase = (torch.rand(count, generator=g) * 2 * math.pi)[:, None, None]
        stripes = torch.sin(2 * math.pi / 8 * (u * torch.cos(angle) + v * torch.sin(angle)) + phase)
        colour = palette[y][:, :, None, None]
        brightness = (torch.rand(count, 1, 1, 1, generator=g) - 0.5) * 60
        noise = torch.randn(count, 3, 32, 32, generator=g) * 25
        x = 128 + brightness + 40 * colour + 50 * colour * stripes[:, None] + noise
        return x.round().clamp(0, 255).to(torch.uint8), y

    train_x, train_y = make(n)
    test_x, test_y = make(n_test)
    val_x, val_y = make(n_val) if n_val else (None, None)
    mean, std = _mean_std(train_x)
    return Dataset(
        train_x, train_y, test_x, test_y,
        classes=[f"stripes {18 * c} deg" for c in range(10)], name="synthetic (not CIFAR-10)",
        synthetic=True, mean=mean, std=std, val_x=val_x, val_y=val_y,
    ).to(device)


# ---- finding the data ---------------------------------------------------------------------


def _check_root(root: object) -> None:
    if root is not None and (not isinstance(root, (str, os.PathLike)) or isinstance(root, bytes)
                             or not os.fspath(root)):
        raise ValueError(f"root must be None or a non-empty path to a folder or .tar.gz archive (str or "
                         f"pathlib.Path), got {root!r}")


def _data_root(root: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """The data root and where it came from (for messages)."""
    _check_root(root)
    if root is not None:
        return Path(root).expanduser(), "the root argument"
    if os.environ.get("GRADKIT_DATA"):
        return Path(os.environ["GRADKIT_DATA"]).expanduser(), "GRADKIT_DATA"
    return Path("~/.cache/gradkit").expanduser(), "the default ~/.cache/gradkit"


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def _locate(root: Path) -> tuple[str, Path] | None:
    """``(kind, path)`` of the CIFAR-10 source in ``root``, kind in torchvision/folders/archive."""
    if _is_archive(root):
        return "archive", root
    if not root.is_dir():
        return None
    if (root / "data_batch_1").is_file():
        return "torchvision", root
    if (root / TORCHVISION_DIR).is_dir():
        return "torchvision", root / TORCHVISION_DIR
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in candidates:
        if any((folder / split).is_dir() for split in SPLITS):
            return "folders", folder
    archives = sorted(p for p in root.iterdir() if _is_archive(p))
    return ("archive", archives[0]) if archives else None


def find_cifar10(root: str | os.PathLike[str] | None = None) -> str | None:
    """Where :func:`cifar10` would read CIFAR-10 from (a folder or an archive), or None.

    >>> find_cifar10("/nonexistent") is None
    True
    """
    found = _locate(_data_root(root)[0])
    return str(found[1]) if found else None


def _download(root: Path) -> None:
    """torchvision's download of the original archive into ``root/cifar-10-batches-py``."""
    from torchvision.datasets import CIFAR10

    if os.environ.get("GRADKIT_OFFLINE") == "1":
        raise RuntimeError("GRADKIT_OFFLINE=1 forbids network access")
    root.mkdir(parents=True, exist_ok=True)
    CIFAR10(str(root), train=True, download=True)


def _not_found(root: Path, origin: str, reason: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"No CIFAR-10 found in {root} ({origin}). gradkit reads CIFAR-10 from the root argument, "
        f"else the GRADKIT_DATA environment variable, else ~/.cache/gradkit, in one of these layouts:\n"
        f"{LAYOUTS}\n{reason}\n"
        f"To fix: set GRADKIT_DATA (or pass root=) to a folder or archive in one of these layouts "
        f"(the kit's JPEG copy: GRADKIT_DATA=<checkout>/../shared/datasets), or fetch {DOWNLOAD_URL} "
        f"yourself and extract it into {root}."
    )


# ---- reading the data ---------------------------------------------------------------------


def _decode(data: bytes | Path, name: str) -> np.ndarray:
    """One image file as a (32, 32, 3) uint8 array; errors name the file.

    The size is read from the file's header before any pixel is decoded, so a huge image costs
    nothing but its header."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            size = image.size
            if size != (32, 32):
                raise _WrongSize(f"{name}: image is {size[0]}x{size[1]}, CIFAR-10 images are 32x32")
            array = np.asarray(image.convert("RGB"))
    except _WrongSize as err:
        raise ValueError(str(err)) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{name}: not a readable image ({err})") from err
    return array


class _WrongSize(Exception):
    """An image that is not 32x32 (kept apart from PIL's own errors in :func:`_decode`)."""


def _assemble(images: dict[str, dict[str, list[tuple[str, np.ndarray]]]], where: str) -> dict[str, Tensor]:
    """Stack ``images[split][class] = [(file name, HWC array)]`` into uint8 NCHW tensors."""
    out: dict[str, Tensor] = {}
    for split in SPLITS:
        by_class = images.get(split, {})
        missing = [c for c in CLASSES if not by_class.get(c)]
        if len(missing) == len(CLASSES):
            raise ValueError(f"{where}: no {split}/ images (expected {split}/<class>/*.png|jpg)")
        if missing:
            raise ValueError(f"{where}: class folder {split}/{missing[0]}/ is missing or has no images "
                             f"(missing: {', '.join(missing)}); CIFAR-10 has {', '.join(CLASSES)}")
        extra = sorted(set(by_class) - set(CLASSES))
        if extra:
            raise ValueError(f"{where}: {split}/{extra[0]}/ is not a CIFAR-10 class; expected {', '.join(CLASSES)}")
        arrays, labels = [], []
        for label, cls in enumerate(CLASSES):
            files = sorted(by_class[cls], key=lambda item: item[0])
            arrays += [a for _, a in files]
            labels += [label] * len(files)
        out[f"{split}_x"] = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.tensor(labels, dtype=torch.int64)
    return out


def _name(jpeg: bool) -> str:
    return "CIFAR-10 (JPEG copy)" if jpeg else "CIFAR-10"


def _read_folders(folder: Path) -> tuple[dict[str, Tensor], str]:
    images: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {}
    jpeg = False
    for split in SPLITS:
        split_dir = folder / split
        if not split_dir.is_dir():
            raise ValueError(f"{split_dir}: folder missing (expected {split}/<class>/*.png|jpg beside "
                             f"{'test' if split == 'train' else 'train'}/)")
        images[split] = {}
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(p for p in class_dir.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            for p in files:
                _check_image_file(p)
            jpeg = jpeg or any(p.suffix.lower() != ".png" for p in files)
            images[split][class_dir.name] = [(p.name, _decode(p, str(p))) for p in files]
    return _assemble(images, str(folder)), _name(jpeg)


def _check_file(path: Path, limit: int, kind: str, too_large: str) -> None:
    """Refuse, naming it, a path that is not a regular file of at most ``limit`` bytes, from one stat and
    before any byte is read: a FIFO or a link to ``/dev/zero`` would block or never end, and a file far
    larger than any CIFAR-10 file is not one."""
    try:
        info = path.stat()
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err})") from err
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path}: not a regular file (a device, pipe or folder), so not {kind}; not read")
    if info.st_size > limit:
        raise ValueError(f"{path}: {info.st_size} bytes, {too_large}; not read")


def _check_image_file(path: Path) -> None:
    """An image path: a regular file of at most :data:`MAX_IMAGE_BYTES` (a FIFO named ``0001.png`` would
    block the decoder forever; a huge file is not a 32x32 image)."""
    _check_file(path, MAX_IMAGE_BYTES, "an image", f"too large for a 32x32 image (limit {MAX_IMAGE_BYTES} bytes)")


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR-10 batch holds: dicts, lists, bytes, ints and
    numpy arrays. Any other global (a function to call, a class to build) is refused, so a
    crafted file cannot run code."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds only arrays, "
                                         "lists and bytes")
        return super().find_class(module, name)


def _unpickle_batch(data: bytes, key: str, name: str) -> tuple[np.ndarray, list[int]]:
    """The images and labels of batch file ``key`` (read from ``name``), after checking its
    published MD5, with an unpickler that admits nothing but arrays, lists and bytes."""
    expected = BATCH_MD5.get(key)
    digest = hashlib.md5(data).hexdigest()
    if expected is None or digest != expected:
        raise ValueError(
            f"{name}: MD5 {digest} is not the published {expected or 'checksum of any CIFAR-10 batch'}: the file "
            f"is corrupt, partial or not the original, and was not unpickled (unpickling can run code). "
            f"Delete it and download CIFAR-10 again ({DOWNLOAD_URL})."
        )
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3 * 32 * 32)
        labels = list(batch[b"labels"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise ValueError(f"{name}: not a CIFAR-10 batch file ({err!r})") from err
    if len(labels) != len(x) or not all(0 <= v < 10 for v in labels):
        raise ValueError(f"{name}: labels do not match the images (corrupt batch file)")
    return x, labels


def _batches_to_tensors(batches: dict[str, tuple[np.ndarray, list[int]]]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for split, names in TORCHVISION_FILES.items():
        # A batch row is 1024 red, 1024 green, 1024 blue values: reshape to (N, 3, 32, 32).
        x = np.concatenate([batches[n][0].reshape(-1, 3, 32, 32) for n in names])
        out[f"{split}_x"] = torch.from_numpy(np.ascontiguousarray(x))
        out[f"{split}_y"] = torch.tensor([v for n in names for v in batches[n][1]], dtype=torch.int64)
    return out


def _read_torchvision(folder: Path) -> tuple[dict[str, Tensor], str]:
    batches = {}
    for name in [n for names in TORCHVISION_FILES.values() for n in names]:
        path = folder / name
        if not path.exists():
            raise ValueError(f"{path}: file missing from torchvision's CIFAR-10 folder (partial download?)")
        batches[name] = _unpickle_batch(_read_batch_file(path), name, str(path))
    return _batches_to_tensors(batches), "CIFAR-10"


def _read_batch_file(path: Path) -> bytes:
    """The bytes of a batch file, read only when it is a regular file of at most :data:`MAX_BATCH_BYTES`
    (checked with one stat first, as the archive reader checks a member's size): a 400 MB file is
    refused unread, and a link to ``/dev/zero`` or a FIFO, which would never end, is not opened."""
    _check_file(path, MAX_BATCH_BYTES, "a CIFAR-10 batch", "larger than any CIFAR-10 batch file (about 31 MB)")
    with open(path, "rb") as f:
        data = f.read(MAX_BATCH_BYTES + 1)  # the file may have grown since the stat
    if len(data) > MAX_BATCH_BYTES:
        raise ValueError(f"{path}: more than {MAX_BATCH_BYTES} bytes, larger than any CIFAR-10 batch file; not read")
    return data


def _read_archive(path: Path) -> tuple[dict[str, Tensor], str]:
    """Stream a .tar.gz of image folders (or torchvision's archive of batches) without extracting."""
    images: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {}
    batches: dict[str, tuple[np.ndarray, list[int]]] = {}
    batch_names = {n for names in TORCHVISION_FILES.values() for n in names}
    jpeg = False
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or parts[-1].startswith("."):
                    continue
                where = f"{path}:{member.name}"
                if parts[-1] in batch_names and len(parts) >= 2 and parts[-2] == TORCHVISION_DIR:
                    if member.size > MAX_BATCH_BYTES:
                        raise ValueError(f"{where}: {member.size} bytes, larger than any CIFAR-10 batch file "
                                         f"(about 31 MB); not read")
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    batches[parts[-1]] = _unpickle_batch(data, parts[-1], where)
                elif (PurePosixPath(parts[-1]).suffix.lower() in IMAGE_SUFFIXES and 3 <= len(parts) <= 4
                      and parts[-3] in SPLITS):
                    if member.size > MAX_IMAGE_BYTES:
                        raise ValueError(f"{where}: {member.size} bytes, too large for a 32x32 image "
                                         f"(limit {MAX_IMAGE_BYTES} bytes); not read")
                    jpeg = jpeg or not parts[-1].lower().endswith(".png")
                    array = _decode(tar.extractfile(member).read(), where)  # type: ignore[union-attr]
                    images.setdefault(parts[-3], {}).setdefault(parts[-2], []).append((parts[-1], array))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or partial archive ({err})") from err
    if batches:
        missing = sorted(batch_names - set(batches))
        if missing:
            raise ValueError(f"{path}: {TORCHVISION_DIR}/{missing[0]} missing from the archive (partial download?)")
        return _batches_to_tensors(batches), "CIFAR-10"
    return _assemble(images, str(path)), _name(jpeg)


def _decode_source(kind: str, path: Path) -> tuple[dict[str, Tensor], str]:
    """All images of a source as tensors, and the dataset's name."""
    reader = {"torchvision": _read_torchvision, "folders": _read_folders, "archive": _read_archive}[kind]
    return reader(path)


# ---- the cache ----------------------------------------------------------------------------


def cache_dir() -> Path:
    """The user's gradkit cache folder: ``$GRADKIT_CACHE``, else ``~/.cache/gradkit``; decoded images,
    live runs and lesson sweeps go there, never into the checkout or an installed package.

    >>> cache_dir().is_absolute()
    True
    """
    return Path(os.environ.get("GRADKIT_CACHE") or "~/.cache/gradkit").expanduser()


def _source_files(kind: str, path: Path) -> list[Path]:
    """The files whose contents make up the source: the archive, the six batch files, or every
    image file of the split/class folders."""
    if kind == "archive":
        return [path]
    if kind == "torchvision":
        return [path / n for names in TORCHVISION_FILES.values() for n in names]
    files = []
    for split in SPLITS:
        if (path / split).is_dir():
            for class_dir in sorted(c for c in (path / split).iterdir() if c.is_dir()):
                files += sorted(f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    return files


def _cache_key(kind: str, path: Path) -> str:
    """A hash of the source's path and of each of its files' name, size and mtime (ns): a file
    added, removed, or rewritten in place (even under the same name) makes a new key. One stat
    per file."""
    path = path.resolve()
    parts = [f"v{CACHE_VERSION}", kind, str(path)]
    # A missing file is skipped here so that reading it raises the error that names it.
    for p in _source_files(kind, path):
        try:
            st = p.stat()
        except OSError:
            continue
        parts.append(f"{p.relative_to(path) if p != path else p.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _checksum(entry: dict) -> int:
    """CRC-32 of the cached arrays' bytes and of the metadata, stored with the cache and checked
    on every load, so flipped bits in the cache file are found, not trained on."""
    crc = zlib.crc32(repr([entry["name"], entry["classes"], entry["mean"], entry["std"]]).encode())
    for key in ARRAY_KEYS:
        crc = zlib.crc32(entry[key].contiguous().numpy().view(np.uint8).reshape(-1), crc)
    return crc


def _valid_cache(entry: object) -> str | None:
    """Why a loaded cache entry cannot be used, or None when it can."""
    if not isinstance(entry, dict) or entry.get("version") != CACHE_VERSION:
        return "written by another version of gradkit"
    if not all(isinstance(entry.get(k), Tensor) for k in ARRAY_KEYS):
        return "arrays missing"
    if entry.get("checksum") != _checksum(entry):
        return "checksum mismatch: the file was changed or damaged after it was written"
    for split in SPLITS:
        x, y = entry[f"{split}_x"], entry[f"{split}_y"]
        if x.dtype != torch.uint8 or x.shape[1:] != (3, 32, 32) or y.shape != (len(x),):
            return f"{split} arrays have the wrong shape or type"
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < len(entry["classes"])):
            return f"{split} labels outside 0..{len(entry['classes']) - 1}"
    return None


def _save_atomic(obj: dict, target: Path) -> None:
    """Write to a temporary file beside ``target`` and rename it, so no reader sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        # mkstemp makes the file private; the cache is as readable as any other downloaded data.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_all(kind: str, path: Path) -> dict:
    """The decoded full dataset from the cache, decoding and caching it on a miss.

    A cache file that cannot be read, or whose checksum or contents do not hold, is named in a
    warning and rebuilt. A cache that cannot be written (disk full, read-only folder) is named in
    a warning; the decoded data is returned all the same."""
    cache = cache_dir() / f"cifar10-{_cache_key(kind, path)}.pt"
    if cache.is_file():
        try:
            cached = torch.load(cache, weights_only=True)
            problem = _valid_cache(cached)
        except Exception as err:  # a cache that cannot be read for any reason is rebuilt, not fatal
            problem = f"unreadable: {type(err).__name__}: {err}"
        if problem is None:
            return cached
        warnings.warn(f"ignoring the CIFAR-10 cache file {cache} ({problem}); decoding the data again", stacklevel=3)
    arrays, name = _decode_source(kind, path)
    mean, std = _mean_std(arrays["train_x"])
    entry = {"version": CACHE_VERSION, "source": str(path), "name": name, "classes": list(CLASSES),
             "mean": list(mean), "std": list(std), **arrays}
    entry["checksum"] = _checksum(entry)
    try:
        _save_atomic(entry, cache)
    except Exception as err:  # disk full shows up as a RuntimeError from torch.save, not only OSError
        warnings.warn(f"could not write the CIFAR-10 cache {cache} ({type(err).__name__}: {err}); the data is "
                      "returned, and the next call decodes it again", stacklevel=3)
    return entry


# ---- the public loader --------------------------------------------------------------------


def _balanced_indices(y: Tensor, n: int, seed: int, arg: str, classes: list[str]) -> Tensor:
    """``n`` indices with class counts differing by at most one, drawn with ``seed``, shuffled."""
    check_int(arg, n, minimum=1, maximum=len(y), optional=True)
    g = torch.Generator().manual_seed(seed)
    k = len(classes)
    counts = torch.full((k,), n // k)
    counts[torch.randperm(k, generator=g)[: n % k]] += 1
    picks = []
    for c in range(k):
        members = (y == c).nonzero().flatten()
        if counts[c] > len(members):
            raise ValueError(f"{arg}={n} needs {int(counts[c])} images of class {classes[c]!r}, "
                             f"which has {len(members)}")
        picks.append(members[torch.randperm(len(members), generator=g)[: int(counts[c])]])
    chosen = torch.cat(picks)
    return chosen[torch.randperm(len(chosen), generator=g)]


def cifar10(
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    device: str | torch.device = "auto",
    subset: int | None = None,
    seed: int = 0,
    test_subset: int | None = None,
    val: int | None = None,
) -> Dataset:
    """CIFAR-10 as uint8 tensors: train 50,000 and test 10,000 images (3, 32, 32), labels 0-9.

    The data root is the first given of ``root``, ``$GRADKIT_DATA``, ``~/.cache/gradkit`` (layouts
    in the module docstring). When it holds no CIFAR-10 and ``download`` is true, torchvision
    downloads the original into it; if that fails, the error says where to put the data.
    ``subset=n`` keeps ``n`` training images, class-balanced (counts differ by at most one) and
    drawn with ``seed``; ``test_subset=m`` does the same for the test set. ``mean``/``std`` are
    computed on the training images kept.

    A validation split (``val_x``, ``val_y``) is held out of the 50,000 training images first,
    class-balanced and drawn with the fixed seed :data:`VAL_SEED` (so every run of any ``seed``
    validates on the same images), and ``subset`` is then drawn from the remaining ones, so
    validation and training images never overlap. ``val=None`` holds out a tenth of the training
    images used (``default_val_size``: 5,000 of the full set, ``subset // 10`` for a subset);
    ``val=0`` holds out nothing.
    Choose settings on validation accuracy and report test accuracy for the chosen one only. Tensors end up on ``device`` (``"auto"``: CUDA when
    present). Measured on a 2-core x86_64 CPU: the first call decodes the JPEG archive in 10 s
    (quiet machine); later calls read the cache file in about 0.3 s and then check it (CRC) and split,
    count and normalise the images: 3-5 s in all for the full set on the busy machine of 2026-12-01
    (``docs/models.md``).

    >>> data = cifar10(subset=1000, test_subset=500, device="cpu")  # doctest: +SKIP
    >>> data.train_x.shape, data.train_y.bincount().tolist(), data.n_val  # doctest: +SKIP
    (torch.Size([1000, 3, 32, 32]), [100, 100, 100, 100, 100, 100, 100, 100, 100, 100], 100)
    """
    check_bool("download", download)
    check_seed("seed", seed)
    check_int("subset", subset, optional=True)
    check_int("test_subset", test_subset, optional=True)
    check_int("val", val, minimum=0, optional=True)
    resolve_device(device)  # checked here: a bad device is named before any data is read
    data_root, origin = _data_root(root)
    found = _locate(data_root)
    if found is None:
        if not download:
            raise _not_found(data_root, origin, "download=False, so nothing was downloaded.")
        if data_root.name.endswith(ARCHIVE_SUFFIXES):
            raise _not_found(data_root, origin, "The root names an archive that does not exist.")
        try:
            _download(data_root)
        except Exception as err:  # any network or disk failure: the message says what to do instead
            raise _not_found(data_root, origin, f"Downloading with torchvision failed: {err!r}.") from err
        found = _locate(data_root)
        if found is None:
            raise _not_found(data_root, origin, "torchvision's download left no readable data.")
    entry = _load_all(*found)
    train_x, train_y, test_x, test_y = entry["train_x"], entry["train_y"], entry["test_x"], entry["test_y"]
    mean, std = tuple(entry["mean"]), tuple(entry["std"])
    n_val = _check_split(len(train_y), subset, val)
    val_x = val_y = None
    if n_val:
        held = _balanced_indices(train_y, n_val, VAL_SEED, "val", entry["classes"])
        rest = torch.ones(len(train_y), dtype=torch.bool)
        rest[held] = False
        val_x, val_y = train_x[held], train_y[held]
        train_x, train_y = train_x[rest], train_y[rest]
    if subset is not None:
        keep = _balanced_indices(train_y, subset, seed, "subset", entry["classes"])
        train_x, train_y = train_x[keep], train_y[keep]
    if subset is not None or n_val:
        mean, std = _mean_std(train_x)
    if test_subset is not None:
        keep = _balanced_indices(test_y, test_subset, seed, "test_subset", entry["classes"])
        test_x, test_y = test_x[keep], test_y[keep]
    return Dataset(
        train_x, train_y, test_x, test_y, classes=list(entry["classes"]),
        name=entry["name"], synthetic=False, mean=mean, std=std,  # type: ignore[arg-type]
        val_x=val_x, val_y=val_y,
    ).to(device)


def _check_split(n_images: int, subset: int | None, val: int | None) -> int:
    """The validation images to hold out of ``n_images`` training images; refused, naming the
    argument and its accepted range, when ``val`` and ``subset`` do not both fit in them.

    ``val=None`` holds out :func:`default_val_size` of the images used (``subset // 10`` for a
    subset), so a subset fits when ``subset + subset // 10 <= n_images``; a given ``val`` leaves
    ``n_images - val`` images to draw the subset from.

    >>> _check_split(50_000, None, None), _check_split(50_000, 10_000, None), _check_split(200, 150, 50)
    (5000, 1000, 50)
    >>> _check_split(200, 190, None)
    Traceback (most recent call last):
    ...
    ValueError: subset must be None or an int from 1 to 182 (this copy has 200 training images, and val=None holds out subset // 10 of them), got 190
    """
    if val is not None and val >= n_images:
        raise ValueError(f"val must be None or an int from 0 to {n_images - 1} (this copy has {n_images} training "
                         f"images), got {val!r}")
    if subset is None:
        return default_val_size(n_images) if val is None else val
    if val is None:
        largest = n_images * 10 // 11  # s + s // 10 <= n: start just below and step up
        while largest + 1 + default_val_size(largest + 1) <= n_images:
            largest += 1
        why = f"this copy has {n_images} training images, and val=None holds out subset // 10 of them"
    else:
        largest, why = n_images - val, f"this copy has {n_images} training images, and val={val} are held out"
    if subset > largest:
        raise ValueError(f"subset must be None or an int from 1 to {largest} ({why}), got {subset!r}")
    return default_val_size(subset) if val is None else val


def default_val_size(n_train: int) -> int:
    """The validation images :func:`cifar10` holds out when ``val=None`` for ``n_train`` training
    images: a tenth, ``n_train // 10``.

    >>> default_val_size(50_000), default_val_size(10_000), default_val_size(9)
    (5000, 1000, 0)
    """
    return n_train // 10

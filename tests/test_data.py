"""Data: every accepted layout and every error on tiny fake trees, the cache, subsets, synthetic
data, and one check of the real shared JPEG archive (skipped when it is absent)."""

import hashlib
import os
import pickle
import warnings
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gradkit import data as gdata
from gradkit.data import CLASSES, DOWNLOAD_URL, Dataset, cifar10, find_cifar10, synthetic
from gradkit.models import SeedCNN

ORIGINAL_CACHE = os.environ.get("GRADKIT_CACHE")
ORIGINAL_DATA = os.environ.get("GRADKIT_DATA")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache folder and no GRADKIT_DATA, so nothing leaks between tests."""
    monkeypatch.setenv("GRADKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GRADKIT_DATA", raising=False)
    return tmp_path / "cache"


def image_for(label: int, index: int, size: int = 32) -> np.ndarray:
    """A flat image whose colour encodes its class and index, so reads can be checked exactly."""
    array = np.empty((size, size, 3), dtype=np.uint8)
    array[..., 0], array[..., 1], array[..., 2] = 20 * label, index, 255 - label
    return array


def write_folders(base: Path, per_class: int = 2, suffix: str = ".png", classes=CLASSES, splits=("train", "test")) -> Path:
    for split in splits:
        for label, cls in enumerate(classes):
            folder = base / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(image_for(label, i)).save(folder / f"{i:04d}{suffix}")
    return base


def write_archive(folder: Path, archive: Path, arcname: str = "cifar10-jpeg") -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=f"{arcname}/{child.name}" if arcname else child.name)
    return archive


def batch_bytes(first: int, n: int) -> bytes:
    """A batch in the original's format: rows of 1024 red, 1024 green, 1024 blue values."""
    rows = (np.arange(n * 3072, dtype=np.int64).reshape(n, 3072) + first) % 251
    return pickle.dumps({b"data": rows.astype(np.uint8), b"labels": [(first + i) % 10 for i in range(n)]})


@pytest.fixture(autouse=True)
def trust_fake_batches(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The fake batches of :func:`write_torchvision` stand in for the originals: their MD5s replace
    the published ones (the real check is tested with its own table below)."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    table = {name: hashlib.md5(batch_bytes(k * 20, 20)).hexdigest() for k, name in enumerate(names)}
    monkeypatch.setattr(gdata, "BATCH_MD5", table)
    return table


def write_torchvision(root: Path, n: int = 20) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        (folder / name).write_bytes(batch_bytes(k * n, n))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}))
    return root


def expected_tensors(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([torch.from_numpy(image_for(c, i)) for c in range(10) for i in range(per_class)])
    return x.permute(0, 3, 1, 2), torch.arange(10).repeat_interleave(per_class)


# ---- layouts ------------------------------------------------------------------------------


def test_png_folders_in_the_root_are_read_exactly_with_cifar_labels(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "data", per_class=3)
    d = cifar10(root=root, device="cpu", val=0)
    x, y = expected_tensors(3)
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (30, 3, 32, 32)
    assert torch.equal(d.train_x, x) and torch.equal(d.train_y, y)
    assert torch.equal(d.test_x, x) and torch.equal(d.test_y, y)
    assert d.classes == list(CLASSES) and d.name == "CIFAR-10" and not d.synthetic
    assert find_cifar10(root) == str(root)


def test_jpeg_folders_one_level_down_are_named_the_jpeg_copy(tmp_path: Path) -> None:
    write_folders(tmp_path / "data" / "cifar10-jpeg", suffix=".jpg")
    d = cifar10(root=tmp_path / "data", device="cpu", val=0)
    assert d.name == "CIFAR-10 (JPEG copy)"
    assert d.train_x.shape == (20, 3, 32, 32)
    # JPEG is lossy but a flat colour survives within a few levels.
    assert (d.train_x.float() - expected_tensors(2)[0].float()).abs().max() <= 4
    assert find_cifar10(tmp_path / "data") == str(tmp_path / "data" / "cifar10-jpeg")


@pytest.mark.parametrize("arcname", ["cifar10-jpeg", ""])
def test_archive_as_root_is_streamed_with_or_without_a_top_folder(tmp_path: Path, arcname: str) -> None:
    archive = write_archive(write_folders(tmp_path / "src"), tmp_path / "c.tar.gz", arcname)
    d = cifar10(root=archive, device="cpu", val=0)
    x, y = expected_tensors(2)
    assert torch.equal(d.train_x, x) and torch.equal(d.test_y, y) and d.name == "CIFAR-10"
    assert not (tmp_path / "cifar10-jpeg").exists()


def test_archive_inside_the_root_directory_is_found(tmp_path: Path) -> None:
    write_archive(write_folders(tmp_path / "src", suffix=".jpg"), tmp_path / "data" / "cifar10-jpeg.tar.gz")
    assert find_cifar10(tmp_path / "data") == str(tmp_path / "data" / "cifar10-jpeg.tar.gz")
    assert cifar10(root=tmp_path / "data", device="cpu", val=0).name == "CIFAR-10 (JPEG copy)"


def test_torchvision_batches_are_read_in_channel_planes(tmp_path: Path) -> None:
    d = cifar10(root=write_torchvision(tmp_path / "data"), device="cpu", val=0)
    assert d.train_x.shape == (100, 3, 32, 32) and d.test_x.shape == (20, 3, 32, 32)
    row = np.frombuffer(pickle.loads(batch_bytes(0, 20))[b"data"][7].tobytes(), dtype=np.uint8)
    assert d.train_x[7, 1, 2, 5].item() == row[1024 + 2 * 32 + 5]  # green plane, row 2, column 5
    assert d.train_y[:12].tolist() == [i % 10 for i in range(12)]
    assert d.test_y[0].item() == 100 % 10 and d.name == "CIFAR-10"


def test_torchvisions_own_archive_is_read_too(tmp_path: Path) -> None:
    write_torchvision(tmp_path / "src")
    archive = write_archive(tmp_path / "src", tmp_path / "cifar-10-python.tar.gz", arcname="")
    d = cifar10(root=archive, device="cpu", val=0)
    assert d.train_x.shape == (100, 3, 32, 32) and d.name == "CIFAR-10"
    assert torch.equal(d.train_x, cifar10(root=tmp_path / "src", device="cpu", val=0).train_x)


# ---- where the data root comes from -------------------------------------------------------


def test_root_argument_wins_over_gradkit_data_which_wins_over_the_home_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_folders(tmp_path / "arg", per_class=1)
    write_folders(tmp_path / "env", per_class=2)
    write_folders(tmp_path / "home" / ".cache" / "gradkit", per_class=3)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert len(cifar10(device="cpu", val=0).train_y) == 30
    monkeypatch.setenv("GRADKIT_DATA", str(tmp_path / "env"))
    assert len(cifar10(device="cpu", val=0).train_y) == 20
    assert find_cifar10() == str(tmp_path / "env")
    assert len(cifar10(root=tmp_path / "arg", device="cpu", val=0).train_y) == 10


def test_nothing_found_without_download_names_the_variable_layouts_and_url(tmp_path: Path) -> None:
    assert find_cifar10(tmp_path) is None
    with pytest.raises(FileNotFoundError) as err:
        cifar10(root=tmp_path, download=False, val=0)
    message = str(err.value)
    for needle in ("GRADKIT_DATA", "cifar-10-batches-py", "train/<class>", ".tar.gz", DOWNLOAD_URL, str(tmp_path)):
        assert needle in message


def test_failed_download_is_an_error_that_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(root: Path) -> None:
        raise OSError("no network")

    monkeypatch.setattr(gdata, "_download", offline)
    with pytest.raises(FileNotFoundError, match="no network") as err:
        cifar10(root=tmp_path / "empty", val=0)
    assert "GRADKIT_DATA" in str(err.value) and DOWNLOAD_URL in str(err.value)


def test_successful_download_goes_into_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_download(root: Path) -> None:
        calls.append(root)
        write_torchvision(root)

    monkeypatch.setattr(gdata, "_download", fake_download)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    d = cifar10(device="cpu", val=0)
    assert calls == [tmp_path / "home" / ".cache" / "gradkit"]
    assert d.name == "CIFAR-10" and len(d.train_y) == 100


def test_a_missing_archive_path_is_not_downloaded_into(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gdata, "_download", lambda root: pytest.fail("must not download"))
    with pytest.raises(FileNotFoundError, match="archive"):
        cifar10(root=tmp_path / "missing.tar.gz", val=0)


# ---- corrupt and partial data -------------------------------------------------------------


def test_missing_class_folder_is_named(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d", classes=CLASSES[:-1])
    with pytest.raises(ValueError, match="train/truck"):
        cifar10(root=root, device="cpu", val=0)


def test_class_folder_without_images_is_named(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d")
    for f in (root / "test" / "cat").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="test/cat"):
        cifar10(root=root, device="cpu", val=0)


def test_missing_test_split_is_named(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d", splits=("train",))
    with pytest.raises(ValueError, match="test"):
        cifar10(root=root, device="cpu", val=0)


def test_unknown_class_folder_is_named(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d")
    write_folders(tmp_path / "d", classes=["unicorn"], splits=("train",))
    with pytest.raises(ValueError, match="unicorn"):
        cifar10(root=root, device="cpu", val=0)


def test_wrong_image_size_names_the_file(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d")
    bad = root / "train" / "dog" / "0001.png"
    Image.fromarray(image_for(5, 1, size=28)).save(bad)
    with pytest.raises(ValueError, match=r"0001\.png.*28x28"):
        cifar10(root=root, device="cpu", val=0)


def test_undecodable_image_names_the_file(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d")
    (root / "test" / "ship" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"ship/0000\.png"):
        cifar10(root=root, device="cpu", val=0)


def test_missing_class_in_an_archive_is_named(tmp_path: Path) -> None:
    archive = write_archive(write_folders(tmp_path / "src", classes=CLASSES[1:]), tmp_path / "a.tar.gz")
    with pytest.raises(ValueError, match=r"a\.tar\.gz.*airplane"):
        cifar10(root=archive, device="cpu", val=0)


def test_wrong_size_image_in_an_archive_names_the_member(tmp_path: Path) -> None:
    src = write_folders(tmp_path / "src")
    Image.fromarray(image_for(2, 0, size=64)).save(src / "test" / "bird" / "0000.png")
    archive = write_archive(src, tmp_path / "a.tar.gz")
    with pytest.raises(ValueError, match=r"cifar10-jpeg/test/bird/0000\.png.*64x64"):
        cifar10(root=archive, device="cpu", val=0)


def test_truncated_archive_is_named(tmp_path: Path) -> None:
    archive = write_archive(write_folders(tmp_path / "src"), tmp_path / "full.tar.gz")
    partial = tmp_path / "partial.tar.gz"
    partial.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"partial\.tar\.gz"):
        cifar10(root=partial, device="cpu", val=0)


def test_missing_torchvision_batch_is_named(tmp_path: Path) -> None:
    root = write_torchvision(tmp_path / "d")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3"):
        cifar10(root=root, device="cpu", val=0)


def test_corrupt_torchvision_batch_is_named(tmp_path: Path) -> None:
    root = write_torchvision(tmp_path / "d")
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test_batch"):
        cifar10(root=root, device="cpu", val=0)


def test_the_published_md5s_are_torchvisions() -> None:
    from torchvision.datasets import CIFAR10

    published = dict(CIFAR10.train_list + CIFAR10.test_list)
    source = Path(gdata.__file__).read_text()
    assert all(f'"{name}": "{md5}"' in source for name, md5 in published.items()) and len(published) == 6


class Payload:
    """Unpickling this runs ``os.mkdir(marker)``: what a crafted batch file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def crafted_batch(marker: Path) -> bytes:
    return pickle.dumps({b"data": Payload(marker), b"labels": [0]})


@pytest.mark.parametrize("where", ["folder", "archive"])
def test_a_crafted_batch_file_is_refused_by_its_md5_and_nothing_runs(tmp_path: Path, where: str) -> None:
    root = write_torchvision(tmp_path / "d")
    marker = tmp_path / "code-ran"
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(crafted_batch(marker))
    source = root if where == "folder" else write_archive(root, tmp_path / "cifar-10-python.tar.gz", arcname="")
    with pytest.raises(ValueError, match=r"data_batch_2: MD5 [0-9a-f]{32} is not the published") as err:
        cifar10(root=source, device="cpu", val=0)
    assert not marker.exists() and "not unpickled" in str(err.value)


def test_a_crafted_batch_with_the_right_md5_still_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust_fake_batches: dict[str, str]
) -> None:
    """Defence in depth: were the MD5 table wrong, the restricted unpickler still refuses."""
    root = write_torchvision(tmp_path / "d")
    marker = tmp_path / "code-ran"
    data = crafted_batch(marker)
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(data)
    monkeypatch.setitem(gdata.BATCH_MD5, "test_batch", hashlib.md5(data).hexdigest())
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 batch file.*refused to load posix\.mkdir|"
                                         r"test_batch: not a CIFAR-10 batch file.*refused to load os\.mkdir"):
        cifar10(root=root, device="cpu", val=0)
    assert not marker.exists()


def test_the_real_md5_table_refuses_files_that_are_not_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the published table, not the fakes'
    monkeypatch.setenv("GRADKIT_CACHE", str(tmp_path / "cache"))
    root = write_torchvision(tmp_path / "d")
    with pytest.raises(ValueError, match=r"data_batch_1: MD5 .* not the published c99cafc152244af753f735de768cd75f"):
        cifar10(root=root, device="cpu", val=0)


def test_an_oversized_member_of_an_archive_is_not_read(tmp_path: Path) -> None:
    src = write_folders(tmp_path / "src")
    (src / "train" / "cat" / "0000.png").write_bytes(b"\0" * (gdata.MAX_IMAGE_BYTES + 1))
    archive = write_archive(src, tmp_path / "a.tar.gz")
    with pytest.raises(ValueError, match=r"train/cat/0000\.png: \d+ bytes, too large for a 32x32 image"):
        cifar10(root=archive, device="cpu", val=0)


@pytest.mark.parametrize("where", ["folder", "archive"])
def test_a_huge_image_is_refused_from_its_header_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    src = write_folders(tmp_path / "src")
    Image.new("1", (9000, 9000)).save(src / "train" / "dog" / "0001.png")  # 1-bit: a small file, 81 Mpixel
    root = src if where == "folder" else write_archive(src, tmp_path / "a.tar.gz")

    def no_decode(self, *args, **kwargs):
        if self.size != (32, 32):
            raise AssertionError(f"decoded a {self.size} image before checking its size")
        return original(self, *args, **kwargs)

    original = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert", no_decode)
    with pytest.raises(ValueError, match=r"dog/0001\.png: image is 9000x9000, CIFAR-10 images are 32x32"):
        cifar10(root=root, device="cpu", val=0)


@pytest.mark.parametrize("root", [123, 1.5, b"/tmp", ["a"], ""])
def test_a_root_that_is_not_a_path_is_named_before_any_work(
    root: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gdata, "_locate", lambda path: pytest.fail("looked for data"))
    monkeypatch.setattr(gdata, "_download", lambda path: pytest.fail("downloaded"))
    with pytest.raises(ValueError, match=r"root must be None or a non-empty path"):
        cifar10(root=root, val=0)
    with pytest.raises(ValueError, match=r"root must be None or a non-empty path"):
        find_cifar10(root)


@pytest.mark.parametrize("kw, arg", [({"device": "tpu"}, "device"), ({"subset": "10"}, "subset"),
                                     ({"test_subset": 0}, "test_subset")])
def test_bad_arguments_are_named_before_the_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kw: dict, arg: str
) -> None:
    root = write_folders(tmp_path / "d")
    monkeypatch.setattr(gdata, "_load_all", lambda kind, path: pytest.fail("read the data"))
    with pytest.raises(ValueError, match=arg):
        cifar10(root=root, **kw, val=0)


# ---- the cache ----------------------------------------------------------------------------


def test_second_load_comes_from_one_cache_file_without_decoding(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_folders(tmp_path / "d")
    first = cifar10(root=root, device="cpu", val=0)
    files = list(isolated.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # one file, no temporary left behind
    monkeypatch.setattr(gdata, "_decode_source", lambda kind, path: pytest.fail("decoded again"))
    second = cifar10(root=root, device="cpu", val=0)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    assert (first.name, first.mean, first.std) == (second.name, second.mean, second.std)


def test_changed_source_is_decoded_again(tmp_path: Path) -> None:
    archive = write_archive(write_folders(tmp_path / "src", per_class=1), tmp_path / "a.tar.gz")
    assert len(cifar10(root=archive, device="cpu", val=0).train_y) == 10
    write_archive(write_folders(tmp_path / "src2", per_class=2), archive)
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))
    assert len(cifar10(root=archive, device="cpu", val=0).train_y) == 20


def test_unreadable_cache_file_is_replaced(tmp_path: Path, isolated: Path) -> None:
    root = write_folders(tmp_path / "d")
    cifar10(root=root, device="cpu", val=0)
    (cache,) = isolated.iterdir()
    cache.write_bytes(b"half a file")
    with pytest.warns(UserWarning, match="cache"):
        d = cifar10(root=root, device="cpu", val=0)
    assert torch.equal(d.train_x, expected_tensors(2)[0])
    assert torch.load(cache, weights_only=True)["version"] == gdata.CACHE_VERSION


def the_cache(isolated: Path) -> Path:
    (cache,) = isolated.iterdir()
    return cache


def test_flipped_bytes_in_the_cached_pixels_are_found_and_the_cache_rebuilt(tmp_path: Path, isolated: Path) -> None:
    root = write_folders(tmp_path / "d")
    cifar10(root=root, device="cpu", val=0)
    cache = the_cache(isolated)
    entry = torch.load(cache, weights_only=True)
    entry["train_x"][3, 1, 4, 4] ^= 0xFF  # one pixel changed, the checksum kept: what a bad disk does
    torch.save(entry, cache)
    with pytest.warns(UserWarning, match=r"checksum mismatch.*decoding the data again"):
        d = cifar10(root=root, device="cpu", val=0)
    assert torch.equal(d.train_x, expected_tensors(2)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(cifar10(root=root, device="cpu", val=0).train_x, expected_tensors(2)[0])  # rebuilt and valid


def test_flipped_bytes_in_the_cache_file_itself_are_found(tmp_path: Path, isolated: Path) -> None:
    root = write_folders(tmp_path / "d", per_class=3)
    cifar10(root=root, device="cpu", val=0)
    cache = the_cache(isolated)
    raw = bytearray(cache.read_bytes())
    labels = torch.arange(10).repeat_interleave(3).numpy().tobytes()  # train_y as stored (int64)
    at = bytes(raw).index(labels)
    raw[at + 8 * 7 + 6] = 0x40  # label 7's high byte: a label of about 1e16
    cache.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="ignoring the CIFAR-10 cache"):
        d = cifar10(root=root, device="cpu", val=0)
    assert torch.equal(d.train_y, expected_tensors(3)[1])


def test_labels_out_of_range_in_a_cache_are_refused_even_with_a_matching_checksum(tmp_path: Path, isolated: Path) -> None:
    root = write_folders(tmp_path / "d")
    cifar10(root=root, device="cpu", val=0)
    cache = the_cache(isolated)
    entry = torch.load(cache, weights_only=True)
    entry["test_y"][0] = 10**14
    entry["checksum"] = gdata._checksum(entry)
    torch.save(entry, cache)
    with pytest.warns(UserWarning, match=r"labels outside 0\.\.9"):
        d = cifar10(root=root, device="cpu", val=0)
    assert int(d.test_y.max()) == 9


def test_an_image_rewritten_in_place_under_the_same_name_is_decoded_again(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d")
    assert cifar10(root=root, device="cpu", val=0).train_x[0, 0, 0, 0].item() == 0
    image = root / "train" / "airplane" / "0000.png"
    folder_times = [(p, p.stat().st_mtime_ns) for p in (root, root / "train", image.parent)]
    array = image_for(0, 0)
    array[..., 0] = 77
    Image.fromarray(array).save(image)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    for folder, mtime in folder_times:  # no folder changes: only the file does
        os.utime(folder, ns=(mtime, mtime))
    assert cifar10(root=root, device="cpu", val=0).train_x[0, 0, 0, 0].item() == 77


def test_a_cache_that_cannot_be_written_warns_and_still_returns_the_data(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file: "
                           "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    root = write_folders(tmp_path / "d")
    with pytest.warns(UserWarning, match=r"could not write the CIFAR-10 cache.*No space left"):
        d = cifar10(root=root, device="cpu", val=0)
    assert torch.equal(d.train_x, expected_tensors(2)[0])
    assert not isolated.exists() or list(isolated.iterdir()) == []  # no partial file left behind


# ---- subsets, statistics, devices ---------------------------------------------------------


def test_subsets_are_class_balanced_seeded_and_carry_their_own_statistics(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d", per_class=4)
    d = cifar10(root=root, device="cpu", subset=25, test_subset=10, seed=3, val=0)
    counts = d.train_y.bincount(minlength=10)
    assert counts.sum() == 25 and counts.max() - counts.min() <= 1
    assert d.test_y.bincount(minlength=10).tolist() == [1] * 10
    again = cifar10(root=root, device="cpu", subset=25, test_subset=10, seed=3, val=0)
    assert torch.equal(d.train_x, again.train_x) and torch.equal(d.test_y, again.test_y)
    other = cifar10(root=root, device="cpu", subset=25, seed=4, val=0)
    assert not torch.equal(d.train_x, other.train_x)
    f = d.train_x.double() / 255
    assert d.mean == pytest.approx(f.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert d.std == pytest.approx(f.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-12)
    # Each kept image is still paired with its own label (colour channel 2 encodes 255 - label).
    assert torch.equal(d.train_x[:, 2, 0, 0].long(), 255 - d.train_y)


@pytest.mark.parametrize("kw, arg", [({"subset": 0}, "subset"), ({"subset": 41}, "subset"),
                                     ({"subset": 2.5}, "subset"), ({"test_subset": 41}, "test_subset"),
                                     ({"seed": -1}, "seed"), ({"download": "yes"}, "download"),
                                     ({"device": "tpu"}, "device")])
def test_bad_arguments_raise_value_errors_naming_them(tmp_path: Path, kw: dict, arg: str) -> None:
    root = write_folders(tmp_path / "d")
    with pytest.raises(ValueError, match=arg):
        cifar10(root=root, **kw, val=0)


def test_subset_larger_than_a_class_allows_names_the_class(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d", per_class=2)
    for f in list((root / "train" / "frog").iterdir())[1:]:
        f.unlink()
    with pytest.raises(ValueError, match="frog"):
        cifar10(root=root, subset=19, device="cpu", val=0)


def test_device_auto_and_to(tmp_path: Path) -> None:
    d = cifar10(root=write_folders(tmp_path / "d"), device="auto", val=0)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert d.train_x.device.type == expected and d.test_y.device.type == expected
    moved = d.to("cpu")
    assert isinstance(moved, Dataset) and moved.train_x.device.type == "cpu" and moved.name == d.name
    assert "20, 3, 32, 32" in repr(moved)


# ---- synthetic data -----------------------------------------------------------------------


def test_synthetic_is_labelled_balanced_and_reproducible() -> None:
    d = synthetic(n=100, n_test=50, seed=1)
    assert d.synthetic and d.name == "synthetic (not CIFAR-10)" and len(d.classes) == 10
    assert d.train_x.shape == (100, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.train_y.dtype == torch.int64 and d.train_y.bincount().tolist() == [10] * 10
    assert d.test_y.bincount().tolist() == [5] * 10
    assert torch.equal(d.train_x, synthetic(n=100, n_test=50, seed=1).train_x)
    assert not torch.equal(d.train_x, synthetic(n=100, n_test=50, seed=2).train_x)
    f = d.train_x.double() / 255
    assert d.mean == pytest.approx(f.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)


def test_synthetic_is_learnable_well_above_chance() -> None:
    torch.manual_seed(0)
    d = synthetic(n=512, n_test=256, seed=0)
    mean, std = torch.tensor(d.mean).view(1, 3, 1, 1), torch.tensor(d.std).view(1, 3, 1, 1)
    model = SeedCNN(width=0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for idx in torch.randperm(512).split(64):
            loss = F.cross_entropy(model((d.train_x[idx] / 255 - mean) / std), d.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        accuracy = (model((d.test_x / 255 - mean) / std).argmax(1) == d.test_y).float().mean().item()
    assert accuracy > 0.5  # chance is 0.1


@pytest.mark.parametrize("kw, arg", [({"n": 0}, "n"), ({"n_test": -1}, "n_test"), ({"seed": 1.5}, "seed")])
def test_synthetic_rejects_bad_sizes(kw: dict, arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        synthetic(**kw)


# ---- the real JPEG copy -------------------------------------------------------------------


def shared_datasets() -> Path | None:
    for candidate in (ORIGINAL_DATA, Path(__file__).resolve().parents[2] / "shared" / "datasets"):
        if candidate and find_cifar10(candidate):
            return Path(candidate)
    return None


@pytest.mark.skipif(shared_datasets() is None, reason="the shared CIFAR-10 JPEG copy is not beside the checkout")
def test_the_shared_jpeg_copy_has_cifar10s_counts_and_the_measured_means(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real cache, so only the first run on a machine pays the ~10 s decode.
    if ORIGINAL_CACHE is None:
        monkeypatch.delenv("GRADKIT_CACHE")
    else:
        monkeypatch.setenv("GRADKIT_CACHE", ORIGINAL_CACHE)
    d = cifar10(root=shared_datasets(), device="cpu", val=0)
    assert d.name == "CIFAR-10 (JPEG copy)" and d.classes == list(CLASSES)
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert d.train_y.bincount().tolist() == [5000] * 10 and d.test_y.bincount().tolist() == [1000] * 10
    assert d.mean == pytest.approx((0.4913, 0.4821, 0.4465), abs=1e-3)
    assert d.std == pytest.approx((0.2452, 0.2428, 0.2606), abs=1e-3)


def test_validation_split_is_balanced_disjoint_seed_independent_and_excluded_from_statistics(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d", per_class=4)
    d = cifar10(root=root, device="cpu", val=10, subset=20, seed=3)
    assert d.n_val == 10 and d.val_y.bincount(minlength=10).tolist() == [1] * 10
    assert len(d.train_y) == 20 and d.train_y.bincount(minlength=10).tolist() == [2] * 10
    flat = lambda x: {bytes(img.numpy().tobytes()) for img in x}  # noqa: E731
    assert not flat(d.val_x) & flat(d.train_x)
    other_seed = cifar10(root=root, device="cpu", val=10, subset=20, seed=4)
    assert torch.equal(other_seed.val_x, d.val_x)
    f = d.train_x.double() / 255
    assert d.mean == pytest.approx(f.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert cifar10(root=root, device="cpu").n_val == 4  # default: a tenth of the 40 training images
    with pytest.raises(ValueError, match="val"):
        cifar10(root=root, device="cpu", val=40)


@pytest.mark.parametrize("kind", ["oversized", "dev-zero", "fifo"])
def test_a_batch_file_that_is_not_a_small_regular_file_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    root = write_torchvision(tmp_path / "d")
    batch = root / "cifar-10-batches-py" / "data_batch_4"
    batch.unlink()
    if kind == "oversized":
        with open(batch, "wb") as f:
            f.truncate(gdata.MAX_BATCH_BYTES + 1)  # sparse: no disk used, and reading it whole took 400 MB
        message = rf"data_batch_4: {gdata.MAX_BATCH_BYTES + 1} bytes, larger than any CIFAR-10 batch file"
    elif kind == "dev-zero":
        batch.symlink_to("/dev/zero")  # read whole, it never ends
        message = "data_batch_4: not a regular file"
    else:
        os.mkfifo(batch)  # opened, it blocks until a writer comes
        message = "data_batch_4: not a regular file"
    original = gdata._unpickle_batch

    def unpickle(data: bytes, key: str, name: str):
        assert key != "data_batch_4", "read the bad batch"
        return original(data, key, name)

    monkeypatch.setattr(gdata, "_unpickle_batch", unpickle)
    with pytest.raises(ValueError, match=message):
        cifar10(root=root, device="cpu", val=0)


def test_an_image_path_that_is_a_pipe_is_refused_not_waited_on(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d")
    os.mkfifo(root / "train" / "cat" / "0002.png")
    with pytest.raises(ValueError, match=r"cat/0002\.png: not a regular file"):
        cifar10(root=root, device="cpu", val=0)


@pytest.mark.parametrize("kw, message", [
    ({"subset": 10**9}, r"subset must be None or an int from 1 to 19 \(this copy has 20 training images, and "
                        r"val=None holds out subset // 10 of them\), got 1000000000"),
    ({"subset": 19, "val": 5}, r"subset must be None or an int from 1 to 15 \(.*val=5 are held out\), got 19"),
    ({"val": 20}, r"val must be None or an int from 0 to 19 \(this copy has 20 training images\), got 20"),
])
def test_sizes_that_do_not_fit_name_the_argument_and_its_range(tmp_path: Path, kw: dict, message: str) -> None:
    root = write_folders(tmp_path / "d")
    with pytest.raises(ValueError, match=message):
        cifar10(root=root, device="cpu", **kw)


@pytest.mark.parametrize("kw, arg", [({"val": "x"}, "val must be None or an int >= 0"),
                                     ({"val": -1}, "val must be None or an int >= 0"),
                                     ({"val": True}, "val must be None or an int >= 0"),
                                     ({"seed": 2**64}, "seed must be an int from 0 to"),
                                     ({"download": 1}, "download must be True or False")])
def test_more_bad_arguments_are_named_before_the_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kw: dict, arg: str
) -> None:
    monkeypatch.setattr(gdata, "_load_all", lambda kind, path: pytest.fail("read the data"))
    with pytest.raises(ValueError, match=arg):
        cifar10(root=write_folders(tmp_path / "d"), **{"val": 0, **kw})


def test_synthetic_names_a_bad_device_and_seed_before_making_images(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gdata, "_mean_std", lambda x: pytest.fail("made the images"))
    with pytest.raises(ValueError, match="device='gpu' is not a device"):
        synthetic(n=10, n_test=10, device="gpu")
    with pytest.raises(ValueError, match="seed must be an int from 0 to"):
        synthetic(n=10, n_test=10, seed=-1)

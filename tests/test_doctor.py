import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradkit import doctor


def test_all_ok_exits_zero(capsys):
    checks = (lambda: doctor.Check("a", True, "fine"), lambda: doctor.Check("b", True, "fine too"))
    assert doctor.doctor(checks) == 0
    out = capsys.readouterr().out
    assert out.count("[OK]") == 2 and "2 OK, 0 FAIL" in out


def test_a_fail_prints_fix_and_exits_nonzero(capsys):
    def broken():
        raise RuntimeError("boom")

    checks = (lambda: doctor.Check("a", True, "fine"), lambda: doctor.Check("b", False, "bad", "do X"), broken)
    assert doctor.doctor(checks) == 1
    out = capsys.readouterr().out
    assert "[FAIL] b: bad\n       fix: do X" in out
    assert "[FAIL] broken: check crashed: RuntimeError: boom" in out
    assert "1 OK, 2 FAIL" in out


def test_real_checks_of_this_environment():
    assert doctor.check_python().ok
    assert doctor.check_torch().ok and doctor.check_torchvision().ok
    assert doctor.check_device().ok
    assert doctor.check_kernel().ok
    assert doctor.check_widgets().ok


def test_cifar10_check(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADKIT_DATA", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("GRADKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path)
    missing = doctor.check_cifar10(reachable=lambda: False)
    assert not missing.ok and "GRADKIT_DATA" in missing.fix
    downloadable = doctor.check_cifar10(reachable=lambda: True)
    assert downloadable.ok and "download" in downloadable.detail


def test_command_line_reports_a_missing_dataset(tmp_path):
    env = {"GRADKIT_DATA": str(tmp_path / "none"), "GRADKIT_CACHE": str(tmp_path / "cache"),
           "HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "GRADKIT_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "gradkit", "doctor"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[OK]   Python" in proc.stdout
    assert "[FAIL] CIFAR-10: not found" in proc.stdout and "fix: set GRADKIT_DATA" in proc.stdout


def _folders(base, splits=("train", "test")):
    from PIL import Image

    from gradkit.data import CLASSES

    for split in splits:
        for cls in CLASSES:
            (base / split / cls).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(base / split / cls / "0.png")
    return base


@pytest.fixture()
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_cifar10_check_reads_both_splits_and_names_the_path(monkeypatch, isolated):
    root = _folders(isolated / "data")
    monkeypatch.setenv("GRADKIT_DATA", str(root))
    check = doctor.check_cifar10(reachable=lambda: False)
    assert check.ok and str(root) in check.detail and "10 training and 10 test images" in check.detail


def test_cifar10_check_fails_on_a_train_only_folder(monkeypatch, isolated):
    root = _folders(isolated / "data", splits=("train",))
    monkeypatch.setenv("GRADKIT_DATA", str(root))
    check = doctor.check_cifar10(reachable=lambda: True)
    assert not check.ok and str(root) in check.detail and "test" in check.detail


def test_cifar10_check_fails_on_a_truncated_archive(monkeypatch, isolated):
    import tarfile

    src = _folders(isolated / "src")
    archive = isolated / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar10")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    monkeypatch.setenv("GRADKIT_DATA", str(archive))
    check = doctor.check_cifar10(reachable=lambda: True)
    assert not check.ok and "c.tar.gz" in check.detail


def run_doctor_with(tmp_path, shadow: dict[str, str]):
    """``python -m gradkit doctor`` with modules replaced by files in a folder put first on the path."""
    for name, text in shadow.items():
        (tmp_path / f"{name}.py").write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(doctor.__file__).parents[1])]),
           "GRADKIT_DATA": str(tmp_path / "none"), "GRADKIT_CACHE": str(tmp_path / "cache"), "GRADKIT_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "gradkit", "doctor"], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)


def test_an_empty_module_shadowing_ipywidgets_fails(tmp_path):
    proc = run_doctor_with(tmp_path, {"ipywidgets": ""})
    assert proc.returncode == 1
    assert "[FAIL] ipywidgets" in proc.stdout and "lacks FloatLogSlider" in proc.stdout
    assert str(tmp_path / "ipywidgets.py") in proc.stdout


def test_a_broken_torch_is_a_fail_line_not_a_crash(tmp_path):
    proc = run_doctor_with(tmp_path, {"torch": "raise ImportError('torch is broken here')"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "[FAIL] torch: cannot import torch (ImportError: torch is broken here)" in proc.stdout
    assert "[OK]   Python" in proc.stdout


def test_stubs_of_the_other_packages_fail_and_nothing_crashes(tmp_path):
    # An empty matplotlib passed before (only torch, torchvision and ipywidgets were checked); a stub whose
    # every attribute raises must still give a [FAIL] line, not a traceback.
    raising = "def __getattr__(name):\n    raise RuntimeError('stub ' + name)\n"
    proc = run_doctor_with(tmp_path, {"matplotlib": "", "PIL": "", "nbformat": "", "papermill": raising})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"[FAIL] matplotlib: matplotlib at {tmp_path / 'matplotlib.py'} lacks colormaps" in proc.stdout
    assert f"[FAIL] Pillow: PIL at {tmp_path / 'PIL.py'} lacks Image.open" in proc.stdout
    assert f"[FAIL] nbformat: nbformat at {tmp_path / 'nbformat.py'} lacks read" in proc.stdout
    assert f"[FAIL] papermill: papermill at {tmp_path / 'papermill.py'} lacks execute_notebook" in proc.stdout
    assert "[OK]   numpy" in proc.stdout and "[OK]   torch" in proc.stdout


def test_the_real_packages_pass(capsys):
    for check in (doctor.check_numpy, doctor.check_matplotlib, doctor.check_pillow, doctor.check_nbformat,
                  doctor.check_papermill):
        result = check()
        assert result.ok, result.line()

import subprocess
import sys

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

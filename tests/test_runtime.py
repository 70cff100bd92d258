import pytest
import torch

from gradkit import runtime


def test_profile_from_argument_env_and_default(monkeypatch):
    monkeypatch.delenv("GRADKIT_PROFILE", raising=False)
    assert runtime.get_profile() == "cpu"
    monkeypatch.setenv("GRADKIT_PROFILE", "full")
    assert runtime.get_profile() == "full"
    assert runtime.get_profile("smoke") == "smoke"


def test_bad_profile_names_source_and_accepted_values(monkeypatch):
    monkeypatch.setenv("GRADKIT_PROFILE", "fast")
    with pytest.raises(ValueError, match=r"GRADKIT_PROFILE='fast'.*smoke, cpu, full"):
        runtime.get_profile()
    with pytest.raises(ValueError, match=r"profile='huge'"):
        runtime.pick("huge", smoke=1, cpu=2, full=3)


def test_pick_returns_value_of_profile():
    assert [runtime.pick(p, smoke=1, cpu=2, full=3) for p in runtime.PROFILES] == [1, 2, 3]


def test_set_seed_makes_draws_repeat():
    a = torch.rand(3, generator=runtime.set_seed(7)), torch.rand(3)
    b = torch.rand(3, generator=runtime.set_seed(7)), torch.rand(3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for bad in (1.5, -1, 2**64, True, "1"):  # the seeds cifar10() and synthetic() refuse too (checks.check_seed)
        with pytest.raises(ValueError, match="seed must be an int from 0 to 18446744073709551615"):
            runtime.set_seed(bad)


def test_resolve_device():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device='banana'.*accepted values"):
        runtime.resolve_device("banana")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no GPU"):
        runtime.resolve_device("cuda")


def test_headless_and_describe_run(monkeypatch):
    monkeypatch.setenv("GRADKIT_HEADLESS", "1")
    assert runtime.headless()
    monkeypatch.setenv("GRADKIT_HEADLESS", "0")
    assert not runtime.headless()
    line = runtime.describe_run("smoke", "cpu", train_images=1000, epochs=1)
    assert line.startswith("profile=smoke | device=CPU")
    assert "train_images=1000 | epochs=1" in line and f"torch={torch.__version__}" in line

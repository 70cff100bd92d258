"""gradkit.checks: the shared argument checks, constants and labels; importing it stays light."""

import ast
from pathlib import Path

import numpy as np
import pytest

import gradkit
from gradkit.checks import CHANCE, check_bool, check_choice, check_int, check_positive, describe, spec_label


def test_checks_accept_and_return_good_values():
    assert check_int("n", np.int64(3)) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_int("n", 0, minimum=0) == 0
    assert check_positive("c", np.float32(0.5)) == 0.5 and check_positive("c", 2) == 2.0
    assert check_bool("amp", True) is True
    assert check_choice("optimizer", "adam", ("sgd", "adam")) == "adam"
    assert CHANCE == 0.1


@pytest.mark.parametrize("call, words", [
    (lambda: check_int("epochs", 0), "epochs must be an int >= 1, got 0"),
    (lambda: check_int("epochs", True), "epochs must be an int >= 1, got True"),
    (lambda: check_int("epochs", 2.0), "epochs must be an int >= 1, got 2.0"),
    (lambda: check_positive("lr", float("inf")), "lr must be a finite number > 0, got inf"),
    (lambda: check_positive("lr", float("nan")), "lr must be a finite number > 0, got nan"),
    (lambda: check_positive("lr", False), "lr must be a finite number > 0, got False"),
    (lambda: check_positive("lr", "0.1"), "lr must be a finite number > 0, got '0.1'"),
    (lambda: check_bool("augment", "no"), "augment must be True or False, got 'no'"),
    (lambda: check_bool("augment", 1), "augment must be True or False, got 1"),
    (lambda: check_choice("optimizer", "lbfgs", ("sgd", "adam")), "optimizer='lbfgs' is not accepted; accepted values: sgd, adam"),
])
def test_checks_name_the_argument_and_the_accepted_values(call, words):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == words


def test_describe_and_spec_label():
    import torch

    assert describe(torch.zeros(2, 3, dtype=torch.uint8)) == "torch.uint8 tensor of shape (2, 3)"
    assert describe(np.zeros(4)) == "float64 array of shape (4,)" and describe(None) == "NoneType"
    assert spec_label("norm:1.0") == "norm clipping, c=1" and spec_label("auto:10.0") == "AutoClip, p=10"
    assert spec_label("none") == "no clipping" and spec_label("value:0.001") == "value clipping, c=0.001"


def _imports(module):
    """Every gradkit module and top-level package a module imports, at its top or inside functions."""
    path = Path(gradkit.__file__).parent / f"{module}.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                names |= {f"gradkit.{base}"} if base else {f"gradkit.{a.name}" for a in node.names}
            else:
                names.add(base)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return {n.split(".")[0] if not n.startswith("gradkit.") else n for n in names}


@pytest.mark.parametrize("module", ["checks", "history", "loop", "train", "stacked", "runs"])
def test_training_core_imports_no_plotting_and_no_cycle(module):
    found = _imports(module)
    assert not found & {"matplotlib", "gradkit.plots", "gradkit.widgets", "gradkit.toys", "gradkit.sweeps"}, found
    below = {"checks": {"torch"}, "history": {"gradkit.loop", "gradkit.train", "gradkit.stacked", "gradkit.runs"}, "loop": {"gradkit.train", "gradkit.stacked", "gradkit.runs"},
             "train": {"gradkit.stacked", "gradkit.runs"}, "stacked": {"gradkit.runs"}, "runs": set()}[module]
    assert not found & below, found
    if module == "checks":
        assert found <= {"__future__", "math", "numbers", "typing"}, found

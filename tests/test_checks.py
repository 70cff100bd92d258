"""gradkit.checks: the shared argument checks, constants and labels; importing it stays light."""

import ast
from pathlib import Path

import numpy as np
import pytest

import gradkit
from gradkit.checks import (CHANCE, SEED_MAX, check_bool, check_choice, check_int, check_list, check_number,
                            check_positive, check_seed, check_thresholds, describe, plain, spec_label)


def test_checks_accept_and_return_good_values():
    assert check_int("n", np.int64(3)) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_int("n", 0, minimum=0) == 0
    assert check_positive("c", np.float32(0.5)) == 0.5 and check_positive("c", 2) == 2.0
    assert check_bool("amp", True) is True
    assert check_choice("optimizer", "adam", ("sgd", "adam")) == "adam"
    assert check_int("subset", None, optional=True) is None and check_int("val", 19, minimum=0, maximum=19) == 19
    assert check_seed("seed", 0) == 0 and check_seed("seed", SEED_MAX) == SEED_MAX == 2**64 - 1
    assert check_number("momentum", 0, below=1.0) == 0.0 and check_number("weight_decay", np.float32(0.5)) == 0.5
    assert check_number("mean", -3, minimum=None) == -3.0 and check_number("q", 1, maximum=1.0) == 1.0
    assert check_list("seeds", range(3)) == [0, 1, 2] and check_thresholds("t", (1, 0.5)) == [1.0, 0.5]
    assert check_thresholds("t", np.array([0.1, 1.0])) == [0.1, 1.0] and check_list("s", np.arange(2)) == [0, 1]
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
    (lambda: check_int("val", 20, minimum=0, maximum=19), "val must be an int from 0 to 19, got 20"),
    (lambda: check_int("subset", "5", optional=True), "subset must be None or an int >= 1, got '5'"),
    (lambda: check_seed("seed", -1), f"seed must be an int from 0 to {SEED_MAX}, got -1"),
    (lambda: check_seed("seed", 2**64), f"seed must be an int from 0 to {SEED_MAX}, got {2**64}"),
    (lambda: check_seed("seed", 1.0), f"seed must be an int from 0 to {SEED_MAX}, got 1.0"),
    (lambda: check_number("momentum", float("nan"), below=1.0), "momentum must be a finite number in [0, 1), got nan"),
    (lambda: check_number("momentum", 1.0, below=1.0), "momentum must be a finite number in [0, 1), got 1.0"),
    (lambda: check_number("momentum", "0.9", below=1.0), "momentum must be a finite number in [0, 1), got '0.9'"),
    (lambda: check_number("weight_decay", -1e-4), "weight_decay must be a finite number >= 0, got -0.0001"),
    (lambda: check_number("weight_decay", float("inf")), "weight_decay must be a finite number >= 0, got inf"),
    (lambda: check_number("weight_decay", True), "weight_decay must be a finite number >= 0, got True"),
    (lambda: check_number("mean", float("nan"), minimum=None), "mean must be a finite number, got nan"),
    (lambda: check_number("q", 1.5, maximum=1.0), "q must be a finite number in [0, 1], got 1.5"),
    (lambda: check_list("seeds", []), "seeds must be a non-empty list, got []"),
    (lambda: check_list("seeds", "01"), "seeds must be a non-empty list, got '01'"),
    (lambda: check_list("seeds", 1), "seeds must be a non-empty list, got 1"),
    (lambda: check_list("seeds", [1, 2, 1]), "seeds lists 1 more than once; list each value once"),
    (lambda: check_list("seeds", np.zeros(0)), "seeds must be a non-empty list, got []"),
    (lambda: check_thresholds("thresholds", 1.0), "thresholds must be a non-empty list, got 1.0"),
    (lambda: check_thresholds("thresholds", [1.0, "a"]), "thresholds must be numbers > 0; got 'a'"),
    (lambda: check_thresholds("thresholds", [float("nan")]), "thresholds must be numbers > 0; got nan"),
    (lambda: check_thresholds("t", [True], also=" or a name"), "t must be numbers > 0 or a name; got True"),
])
def test_checks_name_the_argument_and_the_accepted_values(call, words):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == words


def test_plain_gives_python_numbers_for_json():
    out = plain({"a": np.int64(3), "b": [np.float32(0.5), True, None], "c": "x", "d": (np.int8(1),)})
    assert out == {"a": 3, "b": [0.5, True, None], "c": "x", "d": [1]}
    assert type(out["a"]) is int and type(out["b"][0]) is float and out["b"][1] is True


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
        assert found <= {"__future__", "collections", "math", "numbers", "typing"}, found

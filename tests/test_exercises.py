"""gradkit.lessons: every checkable exercise is tested with a right and a wrong answer, every hint
points at a section that exists, and the quiz covers each of the seeds' false claims."""

import re
from pathlib import Path

import nbformat
import pytest
import torch
from torch.nn import functional as F
from torchvision import transforms as T

from gradkit import toys
from gradkit.lessons import check, quiz
from gradkit.lessons.exercises import CIFAR_MEAN, CIFAR_STD, EXERCISES
from gradkit.models import build_model, count_params

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


# Right answers, written the way a student would.
def my_clip_norm(grads, c):
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    return [g * min(1.0, c / (float(total) + 1e-6)) for g in grads]


def my_clip_value(grads, c):
    return [g.clamp(-c, c) for g in grads]


def my_agc(weights, grads, clipping, eps=1e-3):
    out = []
    for w, g in zip(weights, grads):
        rows = (lambda t: t.reshape(t.shape[0], -1).norm(dim=1)) if g.ndim >= 2 else (lambda t: t.norm().reshape(1))
        bound = clipping * rows(w).clamp(min=eps)
        gn = rows(g)
        factor = torch.where(gn > bound, bound / gn.clamp(min=1e-6), torch.ones_like(gn))
        out.append(g * (factor.reshape(-1, *([1] * (g.ndim - 1))) if g.ndim >= 2 else factor))
    return out


def autoclip_step(history, grads, percentile):
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    history.append(float(total))
    c = float(torch.quantile(torch.tensor(history), percentile / 100))
    return [g * min(1.0, c / (float(total) + 1e-6)) for g in grads]


def train_step(model, optimizer, x, y, max_norm):
    optimizer.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss


def clip_by_total_norm(parameters, max_norm):
    parameters = [p for p in parameters if p.grad is not None]
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in parameters))
    for p in parameters:
        p.grad.mul_(min(1.0, max_norm / (float(total) + 1e-6)))
    return total


# The mistakes of the find-the-bug notebook and plausible slips elsewhere.
def clip_before_backward(model, optimizer, x, y, max_norm):
    optimizer.zero_grad()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    loss = F.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def no_zero_grad(model, optimizer, x, y, max_norm):
    F.mse_loss(model(x), y).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()


def method_on_optimizer(model, optimizer, x, y, max_norm):
    optimizer.zero_grad()
    F.mse_loss(model(x), y).backward()
    optimizer.clip_grad_norm_(max_norm)
    optimizer.step()


def exhausted_generator(parameters, max_norm):
    parameters = (p for p in parameters if p.grad is not None)
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in parameters))
    for p in parameters:
        p.grad.mul_(min(1.0, max_norm / (float(total) + 1e-6)))
    return total


def per_tensor_norm(grads, c):
    return [g * min(1.0, c / (float(g.norm()) + 1e-6)) for g in grads]


def agc_without_eps(weights, grads, clipping):
    return my_agc(weights, grads, clipping, eps=0.0)


def autoclip_without_current(history, grads, percentile):
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    c = float(torch.quantile(torch.tensor(history or [float(total)]), percentile / 100))
    history.append(float(total))
    return [g * min(1.0, c / (float(total) + 1e-6)) for g in grads]


def _bisect(ok, lo, hi, steps=40):
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _mlp(**kw):
    p = toys.mlp_profile(depth=50, width=64, activation="tanh", init="normal", std=0.3, batch=128, seed=0, **kw)
    return p.first_last_ratio, p.norm_after


def _cosine_02_2():
    a, b = torch.tensor([2.0, -2.0, 2.0, 5.0]), torch.tensor([0.5, -0.5, 0.5, 0.5])  # by hand: ||a|| > 1, bound 1/2
    return float(a @ b / (a.norm() * b.norm()))


N_SEED = count_params(build_model("seed_cnn", width=0.25))
TRAIN_TRANSFORM = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
LR_EDGE = _bisect(lambda lr: toys.descend(lr, 60).step.max() < 1, 0.01, 1.0)


def _sweep_answers():
    """04's answers read from the shipped sweep by hand (it is re-made from time to time)."""
    from gradkit import sweeps
    from gradkit.lessons.exercises import SETTING_A, SETTING_B, _setting_rows

    a, b = _setting_rows(*SETTING_A), _setting_rows(*SETTING_B)
    none = next(r for r in a if r.method == "none")
    norm_a = sorted((r for r in a if r.method == "norm"), key=lambda r: r.threshold)
    within = [r.threshold for r in norm_a if abs(r.val_mean - none.val_mean) <= 0.01]
    outside = [r.threshold for r in norm_a if r.threshold not in within]
    best = {m: sweeps.best_threshold(b, m)[0].threshold for m in ("norm", "value")}
    other_norm = next(r.threshold for r in b if r.method == "norm" and r.threshold != best["norm"])
    return within, outside, best, other_norm, norm_a[0].clip_rate


WITHIN, OUTSIDE, BEST_B, OTHER_NORM_B, SMALLEST_RATE = _sweep_answers()

# exercise id -> (right answers, wrong answers); context keywords in a third element.
CASES = {
    "00.1": ([([0.3, 0.4], [0.3, 0.4])], [([0.6, 0.8], [0.3, 0.4]), ([0.3, 0.4], [1.0, 1.0]), (0.3, 0.4)]),
    "00.2": ([4.0, 4], [3.0, 5.0, -1.0, "four"]),
    "01.1": ([1.0078841, 1.0078431], [1.0, 1.0156, 0.99]),  # exact root, and exp(1/(2n)) from the approximation
    "01.2": ([(0.25, 1.5, False)], [(0.25, 0.5, False), (1.0, 1.5, False), (0.25, 1.5, True), (0.25, 1.5)]),
    "01.3": ([{"clip": _mlp(clip="norm:1.0"), "batchnorm": _mlp(norm="batch"), "residual": _mlp(residual=True)}],
             [{"clip": _mlp(), "batchnorm": _mlp(norm="batch"), "residual": _mlp(residual=True)}, {"clip": (1, 1)}]),
    "01.p1": ([1.5 ** 50, 1e9], [1.0, 1e12, 1e3]),
    "01.p2": ([1.0, 0.3], [1e-6, 1e6]),
    "01.p3": ([0.95 ** 100, 0.01], [0.95, 1e-4]),
    "02.1": ([[(2, 2), (3, 0), (-5, 5)]], [[(2, 2), (3, 1), (-5, 5)], [(0.5, 0.5), (2, 2), (3, 3)], [(2, 2), (2, 2), (3, 3)]]),
    "02.2": ([_cosine_02_2()], [1.0, 0.5]),
    "02.3": ([(LR_EDGE, 2.0)], [(0.3, 2.0), (0.05, 2.0), (LR_EDGE, 0.6), (LR_EDGE, 1.0)]),
    "02.p1": ([12.5, 14.0], [26.6, 0.0, 45.0]),
    "02.p2": ([0.3, 0.5], [30.0, 0.01]),
    "03.p1": ([0.5, 0.42], [0.0, 1.0, 50.0], {"norms": [0.5, 1.5, 2.5, 3.5]}),
    "04.1": ([WITHIN[0]], WITHIN[1:] + OUTSIDE + [0.123]),
    "04.2": ([{**BEST_B, "keeps_step_below": "norm"}],
             [{**BEST_B, "keeps_step_below": "value"}, {**BEST_B, "norm": OTHER_NORM_B, "keeps_step_below": "norm"},
              {**BEST_B, "keeps_direction": "norm"}, {"norm": BEST_B["norm"]}]),
    "04.p1": ([SMALLEST_RATE, min(1.0, SMALLEST_RATE + 0.05)], [abs(SMALLEST_RATE - 0.5), SMALLEST_RATE - 0.3 if SMALLEST_RATE > 0.5 else SMALLEST_RATE + 0.3]),
    "07.1": ([64, 64.0], [1, 8, 1 / 64]),
    "implement.norm": ([my_clip_norm], [per_tensor_norm, my_clip_value, lambda g, c: [x * c for x in g], "not a function"]),
    "implement.value": ([my_clip_value], [my_clip_norm, lambda g, c: [x.clamp(0, c) for x in g]]),
    "implement.agc": ([my_agc], [agc_without_eps, lambda w, g, lam: my_clip_norm(g, lam)]),
    "implement.autoclip": ([autoclip_step], [autoclip_without_current, lambda h, g, p: g]),
    "bug.1": ([train_step], [method_on_optimizer, no_zero_grad]),
    "bug.2": ([train_step], [clip_before_backward, no_zero_grad]),
    "bug.3": (["keras.optimizers.SGD(learning_rate=0.01, global_clipnorm=1.0)", "optimizer = SGD(global_clipnorm=1)"],
              ["keras.optimizers.SGD(learning_rate=0.01, clipnorm=1.0)", "keras.callbacks.ClipNorm(1.0)",
               "SGD(global_clipnorm=0.5)", "SGD(", 3]),
    "bug.4": ([T.Compose([T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])],
              [TRAIN_TRANSFORM, T.ToTensor(), T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])]),
    "bug.5": ([clip_by_total_norm], [exhausted_generator]),
    "bug.6": ([(0.2, "none"), (0.2, None)], [(1.0, "none"), (0.2, "norm:1.0"), (0.2, "bogus"), 0.2]),
    "bug.7": ([{"parameters_without": N_SEED, "parameters_with": N_SEED, "images_changed": False}],
              [{"parameters_without": N_SEED, "parameters_with": N_SEED // 2, "images_changed": False},
               {"parameters_without": N_SEED, "parameters_with": N_SEED, "images_changed": True}]),
}


def test_every_checkable_exercise_has_cases():
    assert set(CASES) == {k for k, e in EXERCISES.items() if e.checker is not None}


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_right_answers_pass_and_wrong_ones_fail(exercise):
    right, wrong, *context = CASES[exercise]
    kw = context[0] if context else {}
    for answer in right:
        fb = check(exercise, answer, **kw)
        assert fb.ok is True, (answer, str(fb))
    for answer in wrong:
        fb = check(exercise, answer, **kw)
        assert fb.ok is False, (answer, str(fb))
        assert "Hint:" in fb.message and EXERCISES[exercise].notebook in str(fb)


def test_wrong_answers_never_print_the_expected_number():
    for answer in (3.0, 5.0):
        assert "4" not in check("00.2", answer).message.replace("(3, 4)", "")
    wrong = check("04.1", OUTSIDE[0]).message
    assert f"c = {WITHIN[0]:g}" not in wrong and f"{WITHIN[0]:g} " not in wrong


def test_wrong_answers_give_no_formula_that_is_one_step_from_the_answer():
    # 07.1 once said "the mean divides the sum by the batch size" and "the gradient is linear in the loss";
    # bug.6 "the factor is min(1, c / ||g||) for ||g|| = 5": each the answer, one division away.
    for answer in (1, 8):
        text = str(check("07.1", answer, batch=64)).lower()
        assert "batch size" not in text and "linear" not in text and "64" not in text, text
    text = str(check("bug.6", (1.0, "none")))
    assert "min(1" not in text and "c / ||g||" not in text, text


def test_step_bound_of_setting_b_read_from_the_runs():
    """04.2's answer: norm clipping's best run stays below lr * c / (1 - m), value clipping's does not."""
    from gradkit import sweeps
    from gradkit.lessons.exercises import SETTING_B, _setting_runs, step_over_bound

    runs = _setting_runs(*SETTING_B)
    rows = sweeps.sweep_table(runs)
    best = {m: sweeps.best_threshold(rows, m)[0] for m in ("norm", "value")}
    by_hand = {}
    for method, row in best.items():
        mine = [h for h in runs if h.config["run_id"] in row.run_ids]
        by_hand[method] = max(max(h.step_norm) for h in mine) / (0.2 * row.threshold / (1 - 0.9))
    assert by_hand["norm"] <= 1 < by_hand["value"]
    for method, row in best.items():
        assert step_over_bound(runs, row) == pytest.approx(by_hand[method], rel=1e-9)


def _words(text: str) -> str:
    """Markdown as words: code, emphasis and TeX marks dropped, whitespace collapsed, lower case."""
    return re.sub(r"\s+", " ", re.sub(r"[`*$]", "", text)).strip().lower()


def _exercise_items(notebook: Path) -> dict[int, str]:
    """The numbered items of a lesson's "## Exercises" section: {1: text, 2: text, 3: text}."""
    nb = nbformat.read(str(notebook), as_version=4)
    [cell] = [c for c in nb.cells if c.cell_type == "markdown" and re.search(r"^## Exercises\s*$", c.source, re.M)]
    section = re.split(r"^## Exercises\s*$", cell.source, flags=re.M)[1]
    parts = re.split(r"^(\d+)\. ", section, flags=re.M)
    return {int(n): _words(text) for n, text in zip(parts[1::2], parts[2::2])}


def _solution_sections(notebook: Path) -> dict[int, str]:
    """Each "## Exercise k" of a solutions notebook: its heading and the markdown under it in that cell."""
    found = {}
    for cell in nbformat.read(str(notebook), as_version=4).cells:
        if cell.cell_type == "markdown":
            for m in re.finditer(r"^## Exercise (\d+)(.*?)(?=^## |\Z)", cell.source, re.M | re.S):
                found[int(m.group(1))] = _words(m.group(2))
    return found


@pytest.mark.parametrize("lesson", sorted(p.name for p in NOTEBOOKS.glob("0[0-9]_*.ipynb")))
def test_lesson_registry_and_solution_tell_the_same_exercise(lesson):
    """The exercise's key phrase is in the lesson's Exercises item, the registry's question and the solution.

    Lesson 03's third exercise asked for momentum=0.0 while registry and solution raised the learning rate;
    lesson 04's third asked for the dead-unit cell while both solved a suggest_threshold exercise."""
    items = _exercise_items(NOTEBOOKS / lesson)
    solutions = _solution_sections(NOTEBOOKS / "solutions" / f"{lesson[:2]}_solutions.ipynb")
    assert sorted(items) == [1, 2, 3] and sorted(solutions) == [1, 2, 3], (sorted(items), sorted(solutions))
    for k in (1, 2, 3):
        ex = EXERCISES[f"{lesson[:2]}.{k}"]
        key = _words(ex.key)
        assert key, f"{ex.id} has no key phrase"
        assert key in items[k], (ex.id, "lesson", key, items[k])
        assert key in _words(ex.question), (ex.id, "registry", key, ex.question)
        assert key in solutions[k], (ex.id, "solution", key, solutions[k][:300])


def test_no_answer_repeats_the_question_and_open_exercises_say_so():
    fb = check("02.1")
    assert fb.ok is None and "no answer yet" in str(fb) and EXERCISES["02.1"].question in str(fb)
    fb = check("06.2", "anything")
    assert fb.ok is None and "no automatic check" in str(fb) and "notebooks/solutions/" in str(fb)


def test_bad_calls_are_named():
    with pytest.raises(ValueError, match="accepted: 00.1"):
        check("99.9", 1.0)
    with pytest.raises(ValueError, match="accepted keywords: norms"):
        check("03.p1", 0.5, norm=[1.0])
    assert "norms=" in str(check("03.p1", 0.5))


def _headings(notebook: Path) -> set[str]:
    nb = nbformat.read(str(notebook), as_version=4)
    return {m.group(1).strip().replace("`", "") for c in nb.cells if c.cell_type == "markdown"
            for m in re.finditer(r"^#+ (.+)$", c.source, re.M)}


def test_every_hint_points_at_a_section_that_exists():
    for ex in EXERCISES.values():
        assert ex.section in _headings(NOTEBOOKS / ex.notebook), ex.id


def test_every_lesson_exercise_is_registered():
    for notebook in sorted(NOTEBOOKS.glob("0[0-7]_*.ipynb")):
        ids = {k for k in EXERCISES if k.startswith(notebook.name[:2] + ".") and not k[3:].startswith("p")}
        assert ids == {f"{notebook.name[:2]}.{i}" for i in (1, 2, 3)}, notebook.name


def test_every_check_id_in_a_notebook_is_registered():
    for notebook in NOTEBOOKS.rglob("*.ipynb"):
        for cell in nbformat.read(str(notebook), as_version=4).cells:
            for exercise in re.findall(r'check\("([^"]+)"', cell.source):
                assert exercise in EXERCISES, (notebook.name, exercise)


SEED_MISTAKES = {  # each false claim of the seeds -> a phrase of the quiz statement that makes it
    "optimizer.clip_grad_norm_": "`optimizer.clip_grad_norm_",
    "clipping before backward()": "before `loss.backward()`",
    "Keras ClipNorm callback": "`ClipNorm` callback",
    "clipnorm is global": "`clipnorm=1.0` clips the norm of the whole gradient",
    "train augmentation on the test set": "test set should get the same random crops",
    "exhausted parameter generator": "loops twice over the same `model.parameters()`",
    "threshold 1 = no clipping": "threshold of 1 means no clipping",
    "clipping is data augmentation": "kind of data augmentation",
    "clipping shrinks the model": "makes the model smaller",
    "clipping cures vanishing gradients": "prevents vanishing gradients",
    "momentum bound": "keeps every step shorter than lr * c",
}


def test_quiz_covers_each_seed_mistake_as_a_false_statement():
    for mistake, phrase in SEED_MISTAKES.items():
        hits = [q for q in quiz.QUESTIONS if phrase in q.statement]
        assert len(hits) == 1 and hits[0].true is False, mistake


def test_quiz_links_point_at_existing_sections():
    for q in quiz.QUESTIONS:
        path, anchor = q.lesson.split("#")
        titles = {h.replace(" ", "-") for h in _headings(NOTEBOOKS / path)}
        assert anchor in titles, q.number


def test_quiz_scores_against_the_key():
    key = {q.number: q.true for q in quiz.QUESTIONS}
    assert quiz.score(key).right == len(key)
    flipped = quiz.score({n: not v for n, v in key.items()})
    assert flipped.right == 0 and all(" wrong: " in line for line in str(flipped).splitlines()[1:])
    assert "[03_cifar10_baseline.ipynb](03_cifar10_baseline.ipynb#" in quiz.score({16: True})._repr_markdown_()
    with pytest.raises(ValueError, match="accepted: 1 to"):
        quiz.score({99: True})
    with pytest.raises(ValueError, match="True or False"):
        quiz.score({1: "no"})


def test_every_lesson_has_its_three_exercises_registered_and_a_solutions_notebook():
    from gradkit.report import lesson_notebooks

    for path in lesson_notebooks():
        nn = path.name[:2]
        assert [e for e in EXERCISES if e in (f"{nn}.1", f"{nn}.2", f"{nn}.3")] == [f"{nn}.1", f"{nn}.2", f"{nn}.3"], nn
        assert all(EXERCISES[f"{nn}.{i}"].notebook == path.name for i in (1, 2, 3)), nn
        assert (path.parent / "solutions" / f"{nn}_solutions.ipynb").is_file(), f"no solutions notebook for {path.name}"


GUIDE = NOTEBOOKS.parent / "docs" / "teaching.md"


def _timing_table(text: str) -> dict[str, list[tuple[str, int]]]:
    """The guide's run-time table: {"01": [("setup", 4), ("1. Products of random matrices", 5), ...,
    ("all", 19)], ...}, as tools/lesson_timings.py measured it."""
    table: dict[str, list[tuple[str, int]]] = {}
    lesson = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.fullmatch(r"\**\d+\**", cells[2]):
            continue
        if re.match(r"\d\d_", cells[0]):
            lesson = cells[0][:2]
        title = "all" if cells[1].startswith("**all cells**") else cells[1]
        table.setdefault(lesson, []).append((title, int(cells[2].strip("*"))))
    return table


def _section_index(sections: list[tuple[str, int]], ref: str) -> int:
    ref = re.sub(r"^sections? ", "", ref.strip())
    for i, (title, _) in enumerate(sections):
        if title == ref or (ref.isdigit() and title.startswith(f"{ref}. ")) or (not ref.isdigit() and title.startswith(ref)):
            return i
    raise AssertionError(f"no section {ref!r} among {[t for t, _ in sections]}")


def _quoted_seconds(sections: list[tuple[str, int]], spec: str) -> int:
    """``"setup + section 4"``, ``"setup to section 2"`` or ``"all"``: the seconds of those table rows."""
    if spec.strip() == "all":
        return dict(sections)["all"]
    parts = [s for s in sections if s[0] != "all"]
    total = 0
    for part in spec.split(" + "):
        ends = [_section_index(parts, ref) for ref in part.split(" to ")]
        total += sum(seconds for _, seconds in parts[ends[0]:ends[-1] + 1])
    return total


def test_teaching_paths_quote_the_measured_table():
    """The 45-minute path said "01 section 4 ... 6 s of cells" where the table measured 3 s (7 s with setup)."""
    text = GUIDE.read_text()
    table = _timing_table(text)
    assert sorted(table) == [f"{i:02d}" for i in range(9)]
    paths = text[text.index("## Three paths"):text.index("## What to ask before each slider")]
    quoted = re.findall(r"(\d+) s of cells: (\d\d) ([^);]+)", paths)
    assert len(quoted) >= 6, quoted
    for seconds, lesson, spec in quoted:
        assert int(seconds) == _quoted_seconds(table[lesson], spec), (lesson, spec, seconds)
    assert not re.search(r"\d+ s of cells\)", paths), "a run time in the paths that does not say which rows it sums"

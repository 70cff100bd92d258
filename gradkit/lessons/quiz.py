"""A true/false quiz on the misconceptions about gradient clipping, for before and after the class.

Each statement comes from tutorial code or text that circulates (the "seeds" the kit was built
against); each answer has a one-line explanation and a link to the lesson that measures it. Ask
the questions with :func:`questions` (or :func:`show`), collect ``{number: True/False}`` and score
them with :func:`score`: the result prints, per question, right or wrong and the explanation.

>>> result = score({1: False, 2: True})
>>> result.right, result.answered, len(QUESTIONS) == result.total
(1, 2, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Question:
    """One statement, whether it is true, why, and where the kit measures it."""

    number: int
    statement: str
    true: bool
    explanation: str
    lesson: str  # a notebook path relative to notebooks/, with a section anchor


def _q(number: int, statement: str, true: bool, explanation: str, lesson: str) -> Question:
    return Question(number, statement, true, explanation, lesson)


QUESTIONS: tuple[Question, ...] = (
    _q(1, "`optimizer.clip_grad_norm_(1.0)` clips the gradients of every parameter the optimizer holds.", False,
       "PyTorch optimizers have no such method: call `torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)`.",
       "02_clipping_formulas.ipynb#6.-How-other-frameworks-spell-it"),
    _q(2, "Clipping right after `optimizer.zero_grad()`, before `loss.backward()`, works as well as after it.", False,
       "Before backward() there is nothing to clip: the step then uses the full, unclipped gradient.",
       "02_clipping_formulas.ipynb#5.3-Clipping-before-backward()"),
    _q(3, "In Keras you clip gradients by adding a `ClipNorm` callback to `model.fit`.", False,
       "Keras has no ClipNorm callback: clipping is an optimizer argument (`clipnorm=`, `global_clipnorm=`, `clipvalue=`).",
       "02_clipping_formulas.ipynb#6.-How-other-frameworks-spell-it"),
    _q(4, "Keras's `clipnorm=1.0` clips the norm of the whole gradient (all variables together) to 1.", False,
       "`clipnorm` clips each variable's gradient separately (gradkit's `tensor_norm`); the global one is `global_clipnorm`.",
       "02_clipping_formulas.ipynb#1.-The-methods"),
    _q(5, "The test set should get the same random crops and flips as the training set.", False,
       "Augmentation is for training; the test images are only normalised, so every evaluation sees the same inputs.",
       "03_cifar10_baseline.ipynb#The-data"),
    _q(6, "A helper that loops twice over the same `model.parameters()` object sees every parameter both times.", False,
       "`model.parameters()` is a generator: the first loop uses it up and the second sees nothing.",
       "find_the_bug.ipynb#Bug-5:-a-generator-consumed-twice"),
    _q(7, "A clipping threshold of 1 means no clipping.", False,
       "c is a length compared with ||g||: c = 1 clips every step whose gradient norm exceeds 1; lesson 07 counts how many of SeedCNN's steps that is.",
       "07_claims_check.ipynb#Claim-3:-\"A-threshold-of-1-means-no-clipping.\""),
    _q(8, "Gradient clipping is a kind of data augmentation.", False,
       "Clipping changes the gradient between backward() and step(); the images are never touched.",
       "07_claims_check.ipynb#Claim-2:-\"Clipping-is-a-kind-of-data-augmentation-that-reduces-overfitting-(a-regulariser).\""),
    _q(9, "Gradient clipping makes the model smaller or cheaper to run.", False,
       "The parameters and the FLOPs are the same with and without clipping; a training step costs a little more.",
       "07_claims_check.ipynb#Claim-4:-\"Clipping-reduces-the-number-of-parameters-and-the-computation.\""),
    _q(10, "Gradient clipping prevents vanishing gradients.", False,
       "Clipping only ever shortens a gradient; norm clipping scales every layer alike, so the first/last ratio is unchanged.",
       "01_exploding_vanishing.ipynb#4.-What-fixes-vanishing,-and-what-clipping-does"),
    _q(11, "Norm clipping keeps the direction of the gradient.", True,
       "It multiplies the whole gradient by one number min(1, c/||g||): cosine 1 with the raw gradient.",
       "02_clipping_formulas.ipynb#2.-The-geometry-in-two-dimensions"),
    _q(12, "Value clipping keeps the direction of the gradient.", False,
       "It cuts the elements beyond c and leaves the others, which turns the vector.",
       "02_clipping_formulas.ipynb#2.-The-geometry-in-two-dimensions"),
    _q(13, "With SGD momentum 0.9, norm clipping at c keeps every step shorter than lr * c.", False,
       "Clipping bounds the gradient; momentum adds up past clipped gradients, so a step can reach about lr * c / (1 - m) = 10 lr c.",
       "quiz.ipynb#Momentum-and-the-bound-lr-*-c"),
    _q(14, "Clipping each element at c / sqrt(n) is the same as clipping the norm at c.", False,
       "It guarantees ||g|| <= c but cuts far more and turns the gradient; the two agree only when all |g_i| are equal.",
       "07_claims_check.ipynb#Claim-5:-\"Clipping-each-element-to-c/sqrt(n)-is-the-same-as-clipping-the-norm-to-c.\""),
    _q(15, "`torch.nn.utils.clip_grad_norm_` returns the gradient norm after clipping.", False,
       "It returns the total norm before clipping, which is why people log it.",
       "02_clipping_formulas.ipynb#6.-How-other-frameworks-spell-it"),
    _q(16, "When nearly every step is clipped, norm clipping acts like a smaller learning rate.", True,
       "Each clipped step is scaled by c/||g||; lesson 03 prints the mean scale of its clipped run and compares the learning.",
       "03_cifar10_baseline.ipynb#The-gradient-norm-before-clipping"),
    _q(17, "Gradient clipping and weight clipping are the same thing.", False,
       "Gradient clipping bounds the update; weight clipping clamps the weights after the step.",
       "07_claims_check.ipynb#Claim-8:-\"Gradient-clipping-and-weight-clipping-are-the-same-thing.\""),
    _q(18, "Clipping always makes training converge faster.", False,
       "At a small learning rate it barely acts; it helps where the loss is sharp and the steps large (Zhang et al. 2020).",
       "07_claims_check.ipynb#Claim-7:-\"Clipping-makes-training-converge-faster.\""),
)


def questions() -> list[str]:
    """The statements, numbered, without answers: what students see before they answer.

    >>> questions()[9]
    '10. Gradient clipping prevents vanishing gradients.'
    """
    return [f"{q.number}. {q.statement}" for q in QUESTIONS]


def show() -> None:
    """Print the statements for students to mark true or false."""
    print("\n".join(questions()))


@dataclass(frozen=True)
class QuizResult:
    """The score, and per answered question the student's answer next to the question."""

    right: int
    answered: int
    total: int
    items: tuple[tuple[Question, bool], ...]

    def _line(self, q: Question, given: bool, link: bool) -> str:
        verdict = "right" if given == q.true else "wrong"
        where = f"[{q.lesson.split('#')[0]}]({q.lesson})" if link else q.lesson
        return f"{q.number}. {verdict}: {'true' if q.true else 'false'}. {q.explanation} (measured in {where})"

    def __str__(self) -> str:
        lines = [self._line(q, given, link=False) for q, given in self.items]
        return f"{self.right} of {self.answered} answered right ({self.total} questions)\n" + "\n".join(lines)

    def _repr_markdown_(self) -> str:
        lines = [f"- {self._line(q, given, link=True)}" for q, given in self.items]
        return f"**{self.right} of {self.answered}** answered right ({self.total} questions)\n\n" + "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def score(answers: Mapping[int, bool]) -> QuizResult:
    """Compare ``{question number: True/False}`` with the key; each line gives the explanation and the lesson."""
    by_number = {q.number: q for q in QUESTIONS}
    bad = [k for k in answers if k not in by_number]
    if bad:
        raise ValueError(f"answers has question numbers {bad}; accepted: 1 to {len(QUESTIONS)}")
    wrong_type = [k for k, v in answers.items() if not isinstance(v, bool)]
    if wrong_type:
        raise ValueError(f"answers must be True or False; questions {wrong_type} have something else")
    items = tuple((by_number[n], answers[n]) for n in sorted(answers))
    right = sum(given == q.true for q, given in items)
    return QuizResult(right, len(items), len(QUESTIONS), items)

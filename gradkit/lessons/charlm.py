"""A character-level language model on text every Python installation has offline (lesson 08).

The corpus is built in code: the docstrings (``inspect.getdoc``) of a fixed list of standard-library
modules and of their public functions and classes, in a fixed order, reduced to printable ASCII and
newlines. It is deterministic for a given Python version (docstrings change between versions, so
:func:`corpus` reports the version and a hash). The model is a :class:`~gradkit.lessons.recurrent.RecurrentNet`
reading characters and predicting the next one at every step (cross-entropy in nats per character;
predicting uniformly over the vocabulary V scores ``ln V``), trained with the same loop, clipping
records and divergence rule as the adding problem (:func:`gradkit.lessons.recurrent.train`).

>>> text = corpus(modules=("textwrap",), max_chars=2000)
>>> len(text.text) <= 2000, text.vocab[0], text.encode("ab").tolist() == [text.vocab.index("a"), text.vocab.index("b")]
(True, '\\n', True)
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import platform
import statistics
import string
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from gradkit.lessons.recurrent import RecurrentNet, cell_step

MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions", "functools", "glob", "heapq",
    "inspect", "io", "ipaddress", "itertools", "json", "logging", "math", "operator", "os", "pathlib",
    "pickle", "pprint", "queue", "random", "re", "shlex", "shutil", "statistics", "string", "subprocess",
    "tempfile", "textwrap", "threading", "typing", "unittest", "urllib.parse", "uuid", "warnings", "zipfile",
)
ALPHABET = "\n" + "".join(ch for ch in string.printable if ch not in "\t\n\r\x0b\x0c")
UNKNOWN = "?"


@dataclass
class Corpus:
    """The text, its vocabulary (sorted characters) and where it came from."""

    text: str
    vocab: list[str]
    modules: tuple[str, ...]
    python: str = field(default_factory=platform.python_version)

    @property
    def sha(self) -> str:
        """First 12 hex digits of the text's SHA-256: two corpora with one hash are the same text."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    def encode(self, text: str) -> Tensor:
        """Characters -> int64 indices into ``vocab`` (unknown characters map to ``?``)."""
        index = {ch: i for i, ch in enumerate(self.vocab)}
        unknown = index.get(UNKNOWN, 0)
        return torch.tensor([index.get(ch, unknown) for ch in text], dtype=torch.long)

    def decode(self, indices: Tensor | list[int]) -> str:
        return "".join(self.vocab[int(i)] for i in indices)

    def describe(self) -> str:
        return (f"{len(self.text):,} characters ({len(self.text.encode()) / 1024:.0f} KiB), vocabulary {len(self.vocab)}, "
                f"docstrings of {len(self.modules)} standard-library modules, Python {self.python}, sha256 {self.sha}")


def _docstrings(name: str) -> list[str]:
    module = importlib.import_module(name)
    docs = [inspect.getdoc(module) or ""]
    for attr in sorted(vars(module)):
        obj = getattr(module, attr)
        if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", None) not in (name, "_" + name.split(".")[-1]):
            continue
        docs.append(inspect.getdoc(obj) or "")
    return [d for d in docs if d]


def corpus(modules: tuple[str, ...] = MODULES, max_chars: int = 300_000) -> Corpus:
    """The docstrings of ``modules`` (module first, then its public functions and classes by name),
    separated by blank lines, every character outside printable ASCII replaced by ``?``, cut at
    ``max_chars`` characters."""
    if not isinstance(max_chars, int) or max_chars < 100:
        raise ValueError(f"max_chars must be an int >= 100, got {max_chars!r}")
    parts = [doc for name in modules for doc in _docstrings(name)]
    allowed = set(ALPHABET)
    text = "".join(ch if ch in allowed else UNKNOWN for ch in "\n\n".join(parts))[:max_chars]
    return Corpus(text, sorted(set(text)), tuple(modules))


@dataclass
class CharTask:
    """Next-character prediction on windows of ``seq_len`` characters of a :class:`Corpus`.

    The first 90% of the text trains (windows at uniform random offsets), the last 10% tests.
    ``loss`` is the mean cross-entropy per character of each run, in nats.
    """

    text: Corpus
    seq_len: int
    name: str = "charlm"
    tokens: bool = True
    every_step: bool = True
    target_mean: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise ValueError(f"seq_len must be an int >= 2, got {self.seq_len!r}")
        data = self.text.encode(self.text.text)
        cut = int(0.9 * len(data))
        if cut <= self.seq_len + 1 or len(data) - cut <= self.seq_len + 1:
            raise ValueError(f"the corpus ({len(data)} characters) is too short for seq_len={self.seq_len}")
        self.train_ids, self.test_ids = data[:cut], data[cut:]
        self.n_in = self.n_out = len(self.text.vocab)
        self.baseline = math.log(self.n_out)

    def _windows(self, ids: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        start = torch.randint(0, len(ids) - self.seq_len - 1, (n,), generator=generator)
        windows = torch.stack([ids[s:s + self.seq_len + 1] for s in start.tolist()])
        return windows[:, :-1], windows[:, 1:]

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` training windows: inputs (n, seq_len) and next-character targets (n, seq_len)."""
        return self._windows(self.train_ids, n, generator)

    def test_batch(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` windows of the held-out last 10%."""
        return self._windows(self.test_ids, n, generator)

    def config(self) -> dict[str, object]:
        return {"seq_len": self.seq_len, "corpus_chars": len(self.text.text), "corpus_sha": self.text.sha,
                "vocab": len(self.text.vocab), "python": self.text.python}

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy per run: ``out`` (K, B, T, V) logits, ``y`` (K, B, T) -> (K,)."""
        k = out.shape[0]
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none").view(k, -1).mean(1)


@torch.no_grad()
def generate(net: RecurrentNet, text: Corpus, prompt: str, length: int = 200, temperature: float = 0.8,
             seed: int = 0) -> str:
    """``prompt`` followed by ``length`` characters sampled from the model at ``temperature``.

    >>> net = RecurrentNet("gru", 3, 8, 3, tokens=True, every_step=True, seed=0)
    >>> len(generate(net, Corpus("abc", ["a", "b", "c"], ()), "ab", length=5))
    7
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not prompt:
        raise ValueError("prompt must hold at least one character (the model needs a first input)")
    g = torch.Generator().manual_seed(seed)
    h = torch.zeros(1, 1, net.hidden)
    c = torch.zeros_like(h)
    chars = list(prompt)
    logits = None
    for i in text.encode(prompt).tolist() + [None] * length:
        if i is None:
            probs = torch.softmax(logits.flatten() / temperature, 0)
            i = int(torch.multinomial(probs, 1, generator=g))
            chars.append(text.vocab[i])
        a = (net.w_ih[i] + net.bias).view(1, 1, -1)
        h, c = cell_step(net.cell, net.w_hh.unsqueeze(0), a, h, c)
        logits = h.flatten() @ net.w_out + net.b_out
    return "".join(chars)


def count_spikes(loss: list[float] | Tensor, window: int = 20, factor: float = 1.5) -> int:
    """Steps whose training loss is above ``factor`` times the median of the ``window`` steps before.

    >>> count_spikes([1.0] * 25 + [2.0] + [1.0] * 5, window=20)
    1
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    v = torch.as_tensor(loss, dtype=torch.float64)
    return sum(int(v[t] > factor * v[t - window:t].median()) for t in range(window, len(v)))


def spike_findings(runs: list, baseline: float) -> list[str]:
    """Sentences computed from language-model runs, one per clipping setting (in the order of first
    appearance): how many seeds ended above ``baseline`` (the uniform guess, ln(vocabulary) nats per
    character) or diverged, the median final test loss, the loss spikes per run (:func:`count_spikes`)
    and, for a clipped setting, the share of clipped steps (median and largest over the seeds).

    >>> from gradkit.lessons.recurrent import Run
    >>> runs = [Run(config={"clip": "none", "seed": 0}, loss=[2.0] * 21 + [9.0], test_loss=[120.0]),
    ...         Run(config={"clip": "norm:1.0", "seed": 0}, loss=[2.0] * 22, test_loss=[2.3], clipped=[True] + [False] * 21)]
    >>> print("\\n".join(spike_findings(runs, baseline=4.56)))
    no clipping: 1 of 1 seeds ended above the uniform guess (4.56 nats/char) or diverged; median final test loss 120 nats/char; 1 to 1 loss spikes per run.
    norm clipping, c=1: 0 of 1 seeds ended above the uniform guess (4.56 nats/char) or diverged; median final test loss 2.3 nats/char; 0 to 0 loss spikes per run; 4.5% of the steps clipped (median; at most 4.5%).
    """
    from gradkit.plots import spec_label

    out = []
    for spec in dict.fromkeys(r.spec for r in runs):
        mine = [r for r in runs if r.spec == spec]
        failed = sum(r.diverged or r.final_test_loss > baseline for r in mine)
        spikes = [count_spikes(r.loss) for r in mine]
        median = statistics.median(r.final_test_loss for r in mine)
        text = (f"{spec_label(spec)}: {failed} of {len(mine)} seeds ended above the uniform guess ({baseline:.2f} "
                f"nats/char) or diverged; median final test loss {median:.3g} nats/char; {min(spikes)} to {max(spikes)} "
                f"loss spikes per run")
        if spec != "none":
            shares = [r.clip_share for r in mine]
            text += (f"; {100 * statistics.median(shares):.1f}% of the steps clipped (median; at most "
                     f"{100 * max(shares):.1f}%)")
        out.append(text + ".")
    return out

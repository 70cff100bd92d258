"""Lesson 08's character-level language model: the corpus, the task and sampling."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradkit.lessons import charlm
from gradkit.lessons.recurrent import RecurrentNet, train

MODULES = ("textwrap", "string")


@pytest.fixture(scope="module")
def text() -> charlm.Corpus:
    return charlm.corpus(modules=MODULES, max_chars=20_000)


def test_corpus_is_deterministic_printable_and_cut(text):
    again = charlm.corpus(modules=MODULES, max_chars=20_000)
    assert again.text == text.text and again.sha == text.sha
    assert len(text.text) <= 20_000 and set(text.text) <= set(charlm.ALPHABET)
    assert text.text.startswith(__import__("inspect").getdoc(__import__("textwrap")))
    assert text.decode(text.encode("wrap(text)")) == "wrap(text)"
    assert text.decode(text.encode("\u00e9")) == "?" or "?" not in text.vocab
    with pytest.raises(ValueError, match="max_chars"):
        charlm.corpus(max_chars=10)


def test_task_windows_shift_by_one_and_loss_is_cross_entropy(text):
    task = charlm.CharTask(text, 16)
    x, y = task.sample(4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    tx, _ = task.test_batch(2, torch.Generator().manual_seed(0))
    assert tx.shape == (2, 16)
    assert task.baseline == pytest.approx(math.log(len(text.vocab)))
    logits = torch.randn(2, 4, 16, len(text.vocab))
    yy = torch.stack([y, y])
    expected = torch.stack([F.cross_entropy(logits[k].reshape(-1, len(text.vocab)), yy[k].reshape(-1)) for k in range(2)])
    assert torch.allclose(task.loss(logits, yy), expected, atol=1e-6)
    with pytest.raises(ValueError, match="seq_len"):
        charlm.CharTask(text, 1)


def test_char_model_trains_and_generates(text):
    task = charlm.CharTask(text, 12)
    [run] = train(task, "gru", [("norm:1", 0)], hidden=16, lr=0.5, steps=30, momentum=0.9, eval_every=30,
                  test_size=16)
    assert run.test_loss[-1] < run.test_loss[0] < 1.2 * task.baseline
    assert run.config["corpus_sha"] == text.sha and run.config["vocab"] == len(text.vocab)
    net = RecurrentNet("gru", task.n_in, 16, task.n_out, tokens=True, every_step=True, seed=0)
    sample = charlm.generate(net, text, "The ", length=30, seed=1)
    assert sample.startswith("The ") and len(sample) == 34
    assert sample == charlm.generate(net, text, "The ", length=30, seed=1)


def test_generate_follows_the_model_step_by_step(text):
    net = RecurrentNet("lstm", len(text.vocab), 8, len(text.vocab), tokens=True, every_step=True, seed=0)
    prompt = "abc"
    # At a temperature near 0 sampling is the argmax of the model's own next-character logits.
    out = charlm.generate(net, text, prompt, length=1, temperature=1e-4)
    logits = net(text.encode(prompt).unsqueeze(0))[0, -1]
    assert out[-1] == text.vocab[int(logits.argmax())]


def test_count_spikes_by_hand():
    assert charlm.count_spikes([1.0] * 10 + [1.6, 1.0, 1.4], window=10) == 1
    assert charlm.count_spikes([1.0] * 5, window=10) == 0
    with pytest.raises(ValueError, match="window"):
        charlm.count_spikes([1.0], window=0)


def test_spike_findings_count_failures_spikes_and_clipped_steps_by_hand():
    from gradkit.lessons.recurrent import Run

    calm = [2.0] * 30
    spiky = [2.0] * 20 + [4.0] + [2.0] * 4 + [3.5] + [2.0] * 4  # two steps above 1.5 x the median of 20 before
    runs = [Run(config={"clip": "none", "seed": s}, loss=loss, test_loss=[t], diverged_step=d)
            for s, (loss, t, d) in enumerate([(spiky, 120.0, None), (calm, 2.2, None), (calm[:5], 2.0, 5)])]
    runs += [Run(config={"clip": "norm:1.0", "seed": s}, loss=calm, test_loss=[2.3 + s / 10],
                 clipped=[True] * k + [False] * (30 - k)) for s, k in enumerate([3, 0, 6])]
    none, clipped = charlm.spike_findings(runs, baseline=4.56)
    # seed 0 ended above ln 96, seed 2 diverged (inf): 2 of 3; median of 120, 2.2, inf is 120
    assert none == ("no clipping: 2 of 3 seeds ended above the uniform guess (4.56 nats/char) or diverged; "
                    "median final test loss 120 nats/char; 0 to 2 loss spikes per run.")
    assert clipped.startswith("norm clipping, c=1: 0 of 3 seeds ended above")
    assert "median final test loss 2.4 nats/char" in clipped
    assert clipped.endswith("10.0% of the steps clipped (median; at most 20.0%).")

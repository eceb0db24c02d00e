"""Independent oracle for the teacher's store (issue 30): what a distilled run keeps as the
teacher's log-probabilities, against `torch.log_softmax` of a direct forward of the teacher.

The reference loads the teacher with transformers, tokenises the training texts itself and
takes the log-softmax at temperature 1: the store holds the raw log-probabilities, whatever
`train.distill_temperature` the student uses (the temperature is applied in the loss).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from lorafit.train import train

from .conftest import AG_LABELS

HEAD, BIAS = "classifier.out_proj.weight", "classifier.out_proj.bias"


def sharpened(model: Path, out: Path, texts: list[str], spread: float) -> Path:
    """A copy of `model` whose head gives confident, varied predictions: a random 32-wide
    model hands its head nearly the same features for every text, so the output layer is
    re-centred on these texts' mean features and scaled until the logits spread by `spread`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = Path(shutil.copytree(model, out))
    net = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    seen = []
    hook = net.classifier.out_proj.register_forward_hook(
        lambda m, args, result: seen.append(args[0])
    )
    with torch.no_grad():
        net(
            **AutoTokenizer.from_pretrained(out)(
                texts, truncation=True, max_length=64, padding=True, return_tensors="pt"
            )
        )
    hook.remove()
    features = seen[0].double()
    weights = load_file(out / "model.safetensors")
    w = weights[HEAD].double()
    scale = spread / float((features @ w.T).std(dim=0).mean())
    weights[HEAD] = (w * scale).float()
    weights[BIAS] = (-(features.mean(dim=0) @ w.T) * scale).float()
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def teachers(tiny_model, data, tmp_path_factory) -> tuple[Path, Path]:
    texts = pd.read_csv(data[0]).text.tolist()
    folder = tmp_path_factory.mktemp("teachers")
    sharp = sharpened(tiny_model, folder / "sharp", texts, 4.0)
    return sharp, sharpened(tiny_model, folder / "flipped", texts, -2.0)


@pytest.fixture(scope="module")
def data(small_csv, tmp_path_factory) -> tuple[Path, Path]:
    rows = pd.read_csv(small_csv)
    folder = tmp_path_factory.mktemp("teacher-data")
    rows.iloc[:48].to_csv(folder / "train.csv", index=False)
    rows.iloc[48:88].to_csv(folder / "val.csv", index=False)
    return folder / "train.csv", folder / "val.csv"


@torch.no_grad()
def direct_log_probs(teacher: Path, texts: list[str], max_length: int = 64) -> np.ndarray:
    """The teacher's log-probabilities at temperature 1, by hand: tokenise, pad, forward in
    eval mode (no dropout), log-softmax in float64."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForSequenceClassification.from_pretrained(teacher, dtype=torch.float32).eval()
    batch = tokenizer(
        texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    logits = model(**batch).logits.double()
    return torch.log_softmax(logits, dim=-1).numpy()


def stored_log_probs(cache: Path) -> np.ndarray:
    (store,) = [p for p in (cache / "teacher").iterdir() if (p / "meta.json").is_file()]
    return np.load(store / "log_probs.npy")


def distil(
    tmp_path: Path, data: tuple[Path, Path], teacher: list[Path], temperature: float
) -> Path:
    train_csv, val_csv = data
    cache = tmp_path / "cache"
    train(
        None,
        [
            AG_LABELS,
            f"model.name={teacher[0]}",
            f"data.train={train_csv}",
            f"data.validation={val_csv}",
            "model.max_length=64",
            "train.max_steps=1",
            "train.batch_size=16",
            "train.mixed_precision=no",
            f"train.teacher=[{','.join(map(str, teacher))}]",
            f"train.distill_temperature={temperature}",
            "train.distill_weight=0.5",
            "log.progress=false",
            f"run.dir={tmp_path / 'runs'}",
            f"train.cache_dir={cache}",
        ],
    )
    return cache


def test_the_store_holds_the_teachers_raw_log_probabilities(teachers, data, tmp_path):
    texts = pd.read_csv(data[0]).text.tolist()
    want = direct_log_probs(teachers[0], texts)
    # the oracle is not degenerate: confident rows, several classes predicted, and softening
    # at the run's temperature would change the numbers well beyond the tolerance
    assert np.exp(want).max(axis=1).mean() > 0.6 and len(set(want.argmax(axis=1))) >= 2
    assert np.abs(torch.log_softmax(torch.from_numpy(want) / 3.0, -1).numpy() - want).max() > 0.1
    got = stored_log_probs(distil(tmp_path, data, [teachers[0]], temperature=3.0))
    assert got.dtype == np.float32 and got.shape == (len(texts), 4)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_an_ensemble_teacher_stores_the_log_of_the_mean_probability(teachers, data, tmp_path):
    texts = pd.read_csv(data[0]).text.tolist()
    a, b = (direct_log_probs(t, texts) for t in teachers)
    want = np.log((np.exp(a) + np.exp(b)) / 2)
    assert np.abs(want - (a + b) / 2).max() > 0.1  # the mean of the logs would be caught
    got = stored_log_probs(distil(tmp_path, data, list(teachers), temperature=2.0))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)

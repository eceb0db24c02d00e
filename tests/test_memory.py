"""Memory figures of the training log: the peak and the memory in use now."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lorafit.train import current_memory_mb, peak_memory_mb


def test_current_memory_falls_when_memory_is_freed_and_the_peak_does_not():
    cpu = torch.device("cpu")
    before = current_memory_mb(cpu)
    block = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    held = current_memory_mb(cpu)
    peak = peak_memory_mb(cpu)
    del block
    after = current_memory_mb(cpu)
    assert held - before > 250  # the block is resident while held
    assert held - after > 250  # and gone when freed (numpy's large blocks are returned at once)
    assert peak_memory_mb(cpu) >= peak >= held - 1  # the peak keeps the high mark


def test_pages_of_a_memory_mapped_file_are_not_memory_in_use(tmp_path):
    """The activation cache is memory-mapped: reading it fills the page cache (VmRSS), which
    the kernel reclaims at will; the log's memory in use must not count it."""
    path = tmp_path / "states.bin"
    np.ones(200 * 2**20 // 8).tofile(path)
    cpu = torch.device("cpu")
    before = current_memory_mb(cpu)
    mapped = np.memmap(path, dtype=np.float64, mode="r")
    assert float(mapped.sum()) == len(mapped)  # every page read
    assert current_memory_mb(cpu) - before < 50
    del mapped


# ------------------------------------------------------------ batch widths: a few shapes


@pytest.fixture
def widths(monkeypatch) -> list[int]:
    """Every sequence width a RoBERTa layer computes on (training, evaluation, prediction)."""
    from transformers.models.roberta import modeling_roberta

    seen: list[int] = []
    forward = modeling_roberta.RobertaLayer.forward

    def recording(self, hidden_states, *args, **kwargs):
        seen.append(hidden_states.shape[1])
        return forward(self, hidden_states, *args, **kwargs)

    monkeypatch.setattr(modeling_roberta.RobertaLayer, "forward", recording)
    return seen


@pytest.mark.parametrize("cached", [False, True], ids=["whole-model", "activation-cache"])
def test_training_batches_reach_the_model_padded_to_a_multiple_of_eight(
    cached, widths, tiny_overrides, small_csv, tmp_path
):
    """Widths that change by one token every batch fragment the C heap and resident memory
    grows for the whole run; lorafit pads every training batch (and the activation cache's
    top layers) to a multiple of 8 tokens, so the model sees a few shapes. Prediction pads to
    the longest row: its length-sorted batches only shrink."""
    from lorafit.predict import predict
    from lorafit.train import train

    lengths = pd.read_csv(small_csv).text.str.split().str.len()
    assert lengths.nunique() > 20  # real rows of many lengths
    extra = (
        ["lora.layers=1", "train.cache_activations=true"]
        if cached
        else ["train.cache_activations=false"]
    )
    run = train(None, [*tiny_overrides, *extra, f"train.cache_dir={tmp_path / 'cache'}"])
    trained = list(widths)
    assert all(w % 8 == 0 for w in trained), sorted(set(trained))
    assert 1 < len(set(trained)) <= 64 // 8  # max_length 64; the widths follow the batches
    short = tmp_path / "short.csv"  # rows under max_length, of many lengths (the texts cut)
    texts = pd.read_csv(small_csv).text.head(150)
    pd.DataFrame({"text": [" ".join(t.split()[: 2 + i % 20]) for i, t in enumerate(texts)]}).to_csv(
        short, index=False
    )
    out = tmp_path / "predictions.csv"
    predict(run, str(short), str(out))
    predicted = widths[len(trained) :]
    assert out.exists() and predicted
    assert predicted == sorted(predicted, reverse=True)  # longest first, then only shorter
    assert any(w % 8 for w in predicted), predicted  # each batch as wide as its longest row


def test_padding_to_a_multiple_of_eight_leaves_each_rows_logits_as_the_model_gives_them(
    tiny_model, small_csv
):
    """lorafit's batched, padded inference against transformers' own forward of each row alone,
    unpadded (fp32, eval mode)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lorafit.data import Encoded
    from lorafit.predict import infer_logits

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    texts = pd.read_csv(small_csv).text.tolist()[:40]
    expected = []
    with torch.no_grad():
        for text in texts:
            one = tokenizer(text, truncation=True, max_length=64, return_tensors="pt")
            expected.append(model(**one).logits[0].numpy())
    encoded = Encoded(
        [tokenizer(t, truncation=True, max_length=64)["input_ids"] for t in texts], None, 0
    )
    assert len({len(r) % 8 for r in encoded.ids}) > 1  # rows that padding to 8 widens
    got = infer_logits(model, encoded, 16, tokenizer.pad_token_id, "cpu")
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-4, atol=1e-5)

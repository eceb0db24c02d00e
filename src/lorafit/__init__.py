"""lorafit: budgeted LoRA fine-tuning of Hugging Face text encoders for classification.

Every CLI subcommand is a function here, usable from a notebook:

    import lorafit
    cfg = lorafit.load_config("configs/agnews_roberta_latent.yaml", ["train.max_steps=100"])
    run_dir = lorafit.train(cfg)
    lorafit.predict(run_dir, "test_unlabelled.pkl", "submission.csv")
    lorafit.evaluate(run_dir, "labelled.csv")
    lorafit.describe(cfg)

The functions are imported here on purpose: a submodule named like its function
(`lorafit/train.py` holds `train`) would otherwise replace the function on first import.
"""

from __future__ import annotations

from lorafit.config import Config, load_config
from lorafit.errors import UserError
from lorafit.params import describe
from lorafit.predict import evaluate, predict
from lorafit.train import train

__version__ = "0.1.0"

__all__ = ["Config", "UserError", "load_config", "train", "describe", "predict", "evaluate"]

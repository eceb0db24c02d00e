"""lorafit: budgeted LoRA fine-tuning of Hugging Face text encoders for classification.

Every CLI subcommand is a function here, usable from a notebook:

    import lorafit
    cfg = lorafit.load_config("configs/agnews_roberta_latent.yaml", ["train.max_steps=100"])
    run_dir = lorafit.train(cfg)
    lorafit.predict(run_dir, "test_unlabelled.pkl", "submission.csv")
    lorafit.evaluate(run_dir, "labelled.csv")
    lorafit.describe(cfg)
    lorafit.sweep("configs/sweeps/minilm_layer_ranges.yaml", parallel=2)
    lorafit.ensemble([run_a, run_b], "test_unlabelled.pkl", "submission.csv", method="weighted")
    lorafit.export_merged(run_dir, "exported-model")
    lorafit.write_plots(run_dir); lorafit.write_training_log(run_dir)
    lorafit.write_report([run_a, run_b], "report.html")
    lorafit.evaluate_perturbed(run_dir, "labelled.csv", "typo,synonym", rate=0.1)
    lorafit.plan("configs/agnews_best.yaml", budget=1_000_000, top=10)
    lorafit.run_bench("configs/quickstart.yaml", dtypes=("fp32", "bf16"))

The functions are imported here on purpose: a submodule named like its function
(`lorafit/train.py` holds `train`) would otherwise replace the function on first import.
"""

from __future__ import annotations

from lorafit.bench import run_bench
from lorafit.config import Config, load_config
from lorafit.ensemble import ensemble
from lorafit.errors import UserError
from lorafit.export import export_merged
from lorafit.params import describe
from lorafit.plan import plan
from lorafit.plots import write_plots
from lorafit.predict import evaluate, predict
from lorafit.report import write_report
from lorafit.robustness import evaluate_perturbed
from lorafit.runlog import write_training_log
from lorafit.sweep import sweep
from lorafit.train import train

__version__ = "0.1.0"

__all__ = [
    "Config", "UserError", "load_config", "train", "describe", "predict", "evaluate",
    "sweep", "ensemble", "export_merged", "write_plots", "write_training_log", "write_report",
    "evaluate_perturbed", "plan", "run_bench",
]

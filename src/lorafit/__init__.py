"""lorafit: budgeted LoRA fine-tuning of Hugging Face text encoders for classification.

Every CLI subcommand is a function here, usable from a notebook:

    import lorafit
    cfg = lorafit.load_config("configs/agnews_roberta_latent.yaml", ["train.max_steps=100"])
    lorafit.check_data(cfg)  # `lorafit check-data`: splits, columns, classes, lengths; no training
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
    lorafit.build_teacher("configs/agnews_teacher.yaml")  # or ensemble=[run_a, run_b], or folds=5
    lorafit.list_caches(); lorafit.remove_caches(older_than_days=30)  # `lorafit cache`

The functions print what the CLI prints (progress lines on stderr, the libraries below quiet:
`lorafit.console`). They are imported on first use (PEP 562), so `import lorafit` and
`lorafit --help` do not load torch. `lorafit.train` stays the function even after the
submodule `lorafit/train.py` is imported (the same holds for predict, plan, ensemble, sweep).
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> (module, attribute, runs inside console(): None = no, "models" = quiets
# transformers too, "files" = reads a run's files only)
_EXPORTS = {
    "Config": ("lorafit.config", "Config", None),
    "UserError": ("lorafit.errors", "UserError", None),
    "load_config": ("lorafit.config", "load_config", None),
    "train": ("lorafit.train", "train", "models"),
    "check_data": ("lorafit.checkdata", "check_data", "models"),
    "describe": ("lorafit.params", "describe", "models"),
    "predict": ("lorafit.predict", "predict", "models"),
    "evaluate": ("lorafit.predict", "evaluate", "models"),
    "sweep": ("lorafit.search", "sweep", "models"),
    "ensemble": ("lorafit.ensemble", "ensemble", "models"),
    "export_merged": ("lorafit.export", "export_merged", "models"),
    "write_plots": ("lorafit.plots", "write_plots", "files"),
    "write_training_log": ("lorafit.runlog", "write_training_log", "files"),
    "write_report": ("lorafit.report", "write_report", "files"),
    "evaluate_perturbed": ("lorafit.robustness", "evaluate_perturbed", "models"),
    "plan": ("lorafit.plan", "plan", "models"),
    "run_bench": ("lorafit.bench", "run_bench", "models"),
    "build_teacher": ("lorafit.teacher", "build_teacher", "models"),
    "list_caches": ("lorafit.caches", "list_caches", None),
    "remove_caches": ("lorafit.caches", "remove_caches", None),
}

__all__ = [
    "Config",
    "UserError",
    "load_config",
    "train",
    "check_data",
    "describe",
    "predict",
    "evaluate",
    "sweep",
    "ensemble",
    "export_merged",
    "write_plots",
    "write_training_log",
    "write_report",
    "evaluate_perturbed",
    "plan",
    "run_bench",
    "build_teacher",
    "list_caches",
    "remove_caches",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on first use
    from lorafit.bench import run_bench
    from lorafit.caches import list_caches, remove_caches
    from lorafit.checkdata import check_data
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
    from lorafit.search import sweep
    from lorafit.teacher import build_teacher
    from lorafit.train import train


def __getattr__(name: str):
    try:
        module, attribute, output = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'lorafit' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    if output is not None:
        value = _in_console(value, libraries=output == "models")
    globals()[name] = value  # next time a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def _in_console(function, libraries: bool):
    @functools.wraps(function)
    def call(*args, **kwargs):
        from lorafit.console import console

        with console(libraries=libraries):
            return function(*args, **kwargs)

    return call


class _Package(types.ModuleType):
    """Keeps `lorafit.train` the function when the submodule lorafit/train.py is first imported
    (the import system then sets the package's attribute `train` to the module)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

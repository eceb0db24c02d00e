"""Training: the whole loop written out, on Hugging Face Accelerate.

    lorafit train --config configs/agnews_roberta_latent.yaml train.lr=3e-4
    accelerate launch --num_processes 2 -m lorafit train --config ...   # data parallel

Order of work: check the config and the budget on a weightless model, read and check the
data, load the weights, and only then create the run directory, so a bad input leaves
nothing behind. Each optimizer step: forward, loss, backward, clip, step, schedule,
zero_grad; every `eval_every` steps: evaluate, keep the best checkpoint, maybe stop early.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lorafit import hooks
from lorafit.augment import training_splits
from lorafit.config import Config, config_to_yaml
from lorafit.cores import tick, use_threads
from lorafit.data import Encoded, encode, epoch_batches
from lorafit.errors import UserError
from lorafit.fastpath import eval_prefix_for, make_forward, plan_prefix_cache
from lorafit.flops import resolve_precision
from lorafit.heads import init_output_bias
from lorafit.metrics import (
    balanced_class_weights,
    class_counts,
    eval_values,
    format_metrics,
    headline,
    resolve_metric,
    sigmoid,
    task_metrics,
    tune_thresholds,
)
from lorafit.model import build_model, load_model_config, load_tokenizer
from lorafit.params import check_budget, describe_model, write_description
from lorafit.predict import infer_logits
from lorafit.rundir import (
    command_line,
    create_run_dir,
    git_commit,
    usual_mode,
    versions,
    write_json,
)

log = logging.getLogger("lorafit")


@dataclass
class TrainState:
    """Where training is; everything early stopping, logging and a resume need."""

    step: int = 0
    epoch: int = 0
    micro: int = 0  # batches of `epoch` already trained on (a resume skips them)
    best_value: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    elapsed_s: float = 0.0  # training time before the last checkpoint (time_s goes on from it)
    best_thresholds: list | None = None  # task: multi_label: the best evaluation's thresholds


def _new_window() -> dict:
    return dict(loss=0.0, steps=0, samples=0, tokens=0, padded=0)


@dataclass
class Run:
    """One training run: what the loop's helpers share, read and update."""

    cfg: Config
    accelerator: Any
    run_dir: Path
    model: Any  # as prepared by Accelerate: unwrap it to save or load weights
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    encoded: dict  # split name -> Encoded
    n_steps: int
    state: TrainState = field(default_factory=TrainState)
    best_weights: dict | None = None  # the best evaluation's trainable tensors, on the CPU
    window: dict = field(default_factory=_new_window)  # sums since the last train row
    metrics: MetricsLogger | None = None  # main process only
    progress: Any = None  # the tqdm bar, if drawn
    started: float = 0.0  # time.time() at the start, less the training time before a resume
    clock: float = 0.0  # time.time() at the last train row
    eval_prefix: Any = None  # fastpath.EvalPrefix: evaluations on the stored prefix output
    ema: dict | None = (
        None  # train.ema_decay: the moving average of the trainable tensors (on the device)
    )
    threads: Any = None  # cores.ThreadGovernor on a CPU: the thread count and its changes
    setup_s: float = 0.0  # this call's seconds before its first step (data, model, cache)

    def count_batch(self, loss: torch.Tensor, samples: int, mask: torch.Tensor) -> None:
        """Add a micro-batch to the window of the next train row."""
        world = self.accelerator.num_processes
        self.window["loss"] += loss.item() / self.cfg.train.grad_accum
        self.window["samples"] += samples
        real = int(mask.sum()) * world  # an estimate across processes, exact for one
        self.window["tokens"] += real
        self.window["padded"] += mask.numel() * world - real


class MetricsLogger:
    """Rows to `metrics.jsonl` (flushed per row) and to the `log.trackers` through Accelerate."""

    def __init__(self, run_dir: Path, accelerator=None, cfg: Config | None = None):
        self.file = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        self.accelerator = accelerator if cfg is not None and cfg.log.trackers else None
        if self.accelerator:
            assert cfg is not None  # trackers only with a config
            start_trackers(self.accelerator, run_dir, cfg)

    def write(self, row: dict) -> None:
        import json

        try:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        except OSError as e:
            raise UserError(
                f"{self.file.name}: cannot write ({e.strerror}); free disk space, then "
                "`lorafit train --resume` the run"
            ) from None
        if self.accelerator:
            values = {
                f"{row['kind']}/{key}": float(value)
                for key, value in row.items()
                if isinstance(value, (int, float)) and key not in ("step", "kind")
            }
            for tracker in self.accelerator.trackers:  # the main process's; none elsewhere
                if tracker.name == "wandb":
                    # W&B drops a row whose step is lower than its last one (the test row is
                    # logged at the best checkpoint's step, after the last): each kind has its
                    # own step axis (`define_metric` in start_trackers)
                    tracker.log({**values, f"{row['kind']}/step": row["step"]})
                else:
                    tracker.log(values, step=row["step"])

    def close(self) -> None:
        self.file.close()
        if self.accelerator:
            self.accelerator.end_training()


def start_trackers(accelerator, run_dir: Path, cfg: Config) -> None:
    """Accelerate's trackers for this run: files under RUN_DIR/trackers/ (TensorBoard events
    in RUN_DIR/trackers/<run.name>/), the experiment named run.name, the run by its folder."""
    from lorafit.config import config_to_dict

    accelerator.project_configuration.logging_dir = str(run_dir / "trackers")
    flat, stack = {}, [("", config_to_dict(cfg))]
    while stack:  # the config as flat scalars: every tracker can store those
        prefix, node = stack.pop()
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append((f"{prefix}{key}.", value))
            else:
                flat[prefix + key] = (
                    value if isinstance(value, (int, float, str, bool)) else str(value)
                )
    # Accelerate names the project (W&B, trackio), experiment (MLflow) or run (Aim) cfg.run.name
    names = {
        "wandb": {"name": run_dir.name},
        "mlflow": {"run_name": run_dir.name},
        "trackio": {"name": run_dir.name},
        "aim": {"experiment": cfg.run.name},
    }
    if not os.environ.get("WANDB_DIR"):  # W&B's files (offline runs too) in the run folder
        (run_dir / "trackers").mkdir(parents=True, exist_ok=True)
        names["wandb"]["dir"] = str(run_dir / "trackers")
    accelerator.init_trackers(
        cfg.run.name,
        config=flat,
        init_kwargs={k: v for k, v in names.items() if k in cfg.log.trackers},
    )
    if "wandb" in cfg.log.trackers:
        wandb_run = accelerator.get_tracker("wandb", unwrap=True)
        for kind in ("train", "eval", "test"):
            wandb_run.define_metric(f"{kind}/step", hidden=True)
            wandb_run.define_metric(f"{kind}/*", step_metric=f"{kind}/step")
    if (
        "aim" in cfg.log.trackers
    ):  # Aim's run name is Accelerate's project name: the folder's instead
        accelerator.get_tracker("aim", unwrap=True).name = run_dir.name


def make_accelerator(cfg: Config):
    from accelerate import Accelerator

    mp = resolve_precision(cfg.train.mixed_precision)
    # Launched as several processes (torchrun, accelerate launch) on a machine without GPUs:
    # Accelerate joins them over gloo only when told it runs on the CPU.
    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        # One process may train several runs (a notebook, a benchmark) in different precisions;
        # Accelerate keeps one state per process and would refuse a second mixed_precision.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    trackers = (
        {"log_with": cfg.log.trackers, "project_dir": cfg.run.dir} if cfg.log.trackers else {}
    )
    return Accelerator(
        mixed_precision=mp, gradient_accumulation_steps=cfg.train.grad_accum, cpu=cpu, **trackers
    )


def build_optimizer(model, cfg: Config) -> torch.optim.Optimizer:
    """AdamW or Lion over the trainable parameters; no weight decay on biases and norms.

    Per-group learning rates for LoRA+ and layer-wise decay: see `lorafit.variants`.
    """
    from lorafit.variants import param_groups

    groups = param_groups(model, cfg)
    if cfg.train.optimizer == "lion":
        from lion_pytorch import Lion

        return Lion(groups, lr=cfg.train.lr)
    return torch.optim.AdamW(groups, lr=cfg.train.lr)


def build_scheduler(optimizer, cfg: Config, total_steps: int):
    from transformers import get_scheduler

    warmup = cfg.train.warmup_steps
    if warmup is None:
        warmup = math.ceil(cfg.train.warmup_ratio * total_steps)
    name = {"constant": "constant_with_warmup"}.get(cfg.train.scheduler, cfg.train.scheduler)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def total_steps(cfg: Config, batches_per_epoch: int) -> int:
    if cfg.train.max_steps:
        return cfg.train.max_steps
    return max(1, math.ceil(cfg.train.epochs * batches_per_epoch / cfg.train.grad_accum))


def peak_memory_mb(device: torch.device) -> float:
    """The process's peak: CUDA memory allocated on a GPU, resident memory (maxrss) on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_memory_mb(device: torch.device) -> float:
    """Memory in use now: CUDA memory allocated on a GPU; on a CPU the process's own resident
    memory (RssAnon of /proc/self/status: heap and tensors, not the pages of memory-mapped
    files such as the activation cache, which the kernel reclaims at will and which VmRSS and
    the peak count), or the peak where /proc is missing (macOS, Windows)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_memory_mb(device)


def evaluate_split(
    model, encoded: Encoded, cfg: Config, pad_id: int, accelerator, prefix=None, thresholds=None
) -> dict:
    """Metrics on a labelled split; with several processes each scores a shard, then gather.

    `prefix` (a `fastpath.EvalPrefix`, the same one for every evaluation of the split) runs
    only the layers above the frozen prefix on that shard's stored prefix output. A
    multi-label run decides at `thresholds`, or (None) at thresholds tuned on this split
    (train.threshold).
    """
    from accelerate.utils import gather_object

    model.eval()
    shard = np.array_split(np.arange(len(encoded.ids)), accelerator.num_processes)[
        accelerator.process_index
    ]
    part = Encoded([encoded.ids[i] for i in shard], None, 0)
    # the bare model: shards can differ by a batch, and the DDP wrapper's forward is a
    # collective (buffer broadcast) that every process would have to join
    bare = accelerator.unwrap_model(model)
    if prefix is not None:
        logits = prefix.logits(bare, part, cfg.train.eval_batch_size)
    else:
        logits = infer_logits(
            bare, part, cfg.train.eval_batch_size, pad_id, accelerator.device, accelerator.autocast
        )
    logits = np.concatenate(gather_object([logits]))
    model.train()
    assert encoded.labels is not None  # a labelled split
    if cfg.task == "multi_label" and thresholds is None:
        average = "micro" if cfg.train.metric == "eval_micro_f1" else "macro"
        thresholds = tune_thresholds(sigmoid(logits), encoded.labels, cfg.train.threshold, average)
    return task_metrics(cfg.task, logits, encoded.labels, cfg.data.label_names, thresholds)


def task_loss(
    cfg: Config, logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor | None
) -> torch.Tensor:
    """The training loss without a teacher: cross-entropy over the classes (class weights,
    label smoothing), or a regression's mean squared error of its one output."""
    if cfg.task == "regression":
        return F.mse_loss(logits.float()[:, 0], labels.float())
    if cfg.task == "multi_label":  # each label a yes/no: the mean binary cross-entropy
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return F.cross_entropy(
        logits.float(), labels, weight=class_weight, label_smoothing=cfg.train.label_smoothing
    )


def improved(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value < best if metric == "eval_loss" else value > best


def save_checkpoint(model, tokenizer, path: Path, state: TrainState, accelerator) -> None:
    """Save the PEFT adapter (LoRA + head, safetensors) and tokenizer; swap it in atomically.

    Written to `<path>.tmp`, then `path` -> `<path>.old`, `.tmp` -> `path`: a crash leaves
    the last good checkpoint at `path` or, between the two renames, at `<path>.old`
    (`recover_best_dir` puts it back). A full disk raises `UserError`; `path` is untouched.
    """
    import shutil

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
        recover_best_dir(path)
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            usual_mode(tmp)  # the weights: 0644 like the other outputs, not the writer's 0600
            write_json(tmp / "lorafit_state.json", asdict(state))
            if state.best_thresholds is not None:  # multi-label: what `lorafit predict` decides at
                names = accelerator.unwrap_model(model).config.id2label  # int keys (transformers)
                write_json(
                    tmp / "thresholds.json",
                    {names.get(i, str(i)): t for i, t in enumerate(state.best_thresholds)},
                )
        except Exception as e:  # noqa: BLE001 - the tokenizers library raises a bare Exception on a full disk
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(
                f"{path}: cannot write the best checkpoint ({getattr(e, 'strerror', None) or e}); free "
                "disk space, then `lorafit train --resume` the run (the previous best is intact)"
            ) from None
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def recover_best_dir(path: Path) -> None:
    """Undo a crash between the two renames of `save_checkpoint`: `<path>.old` is the good one."""
    import shutil

    old = path.with_name(path.name + ".old")
    if old.is_dir() and not path.exists():
        old.rename(path)
    elif old.is_dir():
        shutil.rmtree(old, ignore_errors=True)


def trainable_state(model) -> dict[str, torch.Tensor]:
    """A CPU copy of the trainable tensors (under 1M numbers: cheap to keep the best in memory)."""
    return {
        n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad
    }


def update_ema(ema: dict[str, torch.Tensor], model, decay: float, step: int) -> None:
    """One step of the moving average (train.ema_decay): ema <- d * ema + (1 - d) * weight, at
    d = min(decay, (1 + step) / (10 + step)), so the first steps are not averaged with the
    untrained start (the warm-up of TensorFlow's ExponentialMovingAverage and timm's ModelEmaV2)."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                ema[name].lerp_(p.detach(), 1.0 - d)


@contextmanager
def ema_weights(run: Run):
    """Inside: the model holds the moving average (evaluate, keep and save it); then the training
    weights again. Without train.ema_decay: the training weights throughout."""
    if run.ema is None:
        yield
        return
    model = run.accelerator.unwrap_model(run.model)
    training = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.load_state_dict(run.ema, strict=False)
    try:
        yield
    finally:
        model.load_state_dict(training, strict=False)


def require_trackers(cfg: Config) -> None:
    """Each of log.trackers needs its optional package: say so before writing anything."""
    import importlib

    from lorafit.config import TRACKERS

    for name in cfg.log.trackers:
        try:
            importlib.import_module(TRACKERS[name])
        except ImportError:
            raise UserError(
                f"log.trackers: {name} needs the {TRACKERS[name]} package: pip install "
                f"'lorafit[{name}]' (or pip install {TRACKERS[name]}), or drop it from log.trackers"
                + (" / set log.tensorboard=false" if name == "tensorboard" else "")
            ) from None


def prepare(cfg: Config):
    """Everything that can fail on bad input, before any output is written.

    The data come first: the training file settles the class list (and so the head's size)
    when data.label_names is empty; the budget is checked before any weight is loaded.
    """
    require_trackers(cfg)
    splits = training_splits(cfg.data, cfg.train.seed)  # fills in cfg.data's columns and classes
    model_config = load_model_config(cfg)
    description = describe_model(cfg, build_model(cfg, weights=False, model_config=model_config))
    check_budget(description)
    tokenizer = load_tokenizer(cfg)
    if tokenizer.pad_token_id is None:
        raise UserError(f"model.name {cfg.model.name}: its tokenizer has no padding token")
    torch.manual_seed(cfg.train.seed)  # the head's initialisation
    model = build_model(cfg, weights=True, model_config=model_config)
    return description, splits, tokenizer, model


def _class_weight(cfg: Config, labels: np.ndarray, device) -> torch.Tensor | None:
    """train.class_weights=balanced: the cross-entropy's per-class weights (logged); else None."""
    if cfg.train.class_weights == "none":
        return None
    names = cfg.data.label_names
    weights = balanced_class_weights(labels, len(names))
    counts = class_counts(labels, len(names))
    shown = ", ".join(f"{n} {c} rows x {w:.3f}" for n, c, w in zip(names, counts, weights))
    log.info(
        "class weights (train.class_weights=balanced, rows / (classes x class rows)): %s", shown
    )
    return torch.as_tensor(weights, dtype=torch.float32, device=device)


def _prepare_teacher(cfg: Config, splits: dict, accelerator):
    """train.teacher: the teacher's log-probabilities per training row (computed once, stored);
    data.unlabeled rows join splits["train"] (lorafit.teacher). None without a teacher."""
    if not cfg.train.teacher:
        return None
    from lorafit.teacher.distill import prepare_distillation

    return prepare_distillation(cfg, splits, accelerator)


def train(
    config: Config | str | Path | None = None,
    overrides=(),
    *,
    resume: str | Path | None = None,
    on_eval: Callable[[int, dict], bool] | None = None,
) -> Path:
    """Train a LoRA classifier; return the run directory.

    `config` is a `Config`, a YAML path or None (the defaults); `overrides` are `key=value`
    strings. Raises `UserError` (before anything is written) for bad data, a missing model
    or a config over budget. `resume=RUN_DIR` continues a killed run from its newest
    checkpoint with the run's own config.yaml (no `config` or `overrides` then); the result
    equals an uninterrupted run's on CPU. `on_eval(step, eval_row)` is called after each
    evaluation (every process); returning True stops training there like early stopping
    (a sweep's pruner uses it).
    """
    from accelerate.utils import set_seed

    called = time.time()  # setup_time_s: reading, loading, a teacher's logits, the cache
    cfg, resume_dir = _config_for(config, overrides, resume)
    if resume_dir is not None and (resume_dir / "summary.json").exists():
        return _already_finished(resume_dir)
    accelerator = make_accelerator(cfg)
    if not accelerator.is_main_process:
        log.setLevel(logging.WARNING)  # one console log for the run, not one per process
    set_seed(cfg.train.seed)
    # everything that can refuse the run comes before its folder; train.log gets the lines
    early = _EarlyLog() if accelerator.is_main_process else None
    try:
        description, splits, tokenizer, model = prepare(cfg)
        resolve_metric(cfg, splits["train"].labels)  # train.metric=auto settled before config.yaml
        started = init_output_bias(
            model, cfg.task, splits["train"].labels
        )  # regression, multi-label
        if started:
            log.info("%s", started)
        class_weight = _class_weight(
            cfg, splits["train"].labels, accelerator.device
        )  # None: unweighted
        # after the data's checks (a bad file gets its one-line error alone), before the teacher's
        # logits and the activation cache, the first long computations
        threads = (
            use_threads(cfg.train.threads, "training") if accelerator.device.type == "cpu" else None
        )
        distill = _prepare_teacher(cfg, splits, accelerator)  # None without train.teacher
        if (
            distill is not None
        ):  # the teacher is recorded, not counted (model_description.json, summary.json)
            description = {**description, "teacher": distill.describe()}
        encoded = {k: encode(tokenizer, t, cfg.model.max_length) for k, t in splits.items()}
        _log_data(encoded, cfg)
        cache_plan = plan_prefix_cache(
            cfg, model, encoded["train"], accelerator.num_processes, accelerator.mixed_precision
        )

        world = accelerator.num_processes
        global_batch = cfg.train.batch_size * world
        steps_per_epoch = math.ceil(len(encoded["train"].ids) / global_batch)
        n_steps = total_steps(cfg, steps_per_epoch)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, n_steps)
        model, optimizer = accelerator.prepare(model, optimizer)
        # the activation cache: built (or refused: a one-line error, no run folder) or reused
        forward = make_forward(
            cache_plan, model, encoded["train"], tokenizer.pad_token_id, accelerator
        )
    finally:
        if early is not None:
            log.removeHandler(early)
    run_dir = _open_run_dir(
        cfg, description, accelerator, resume_dir, early.records if early is not None else ()
    )

    # a resume restores weights, optimizer, scheduler, RNG and position, and trims metrics.jsonl
    run = Run(
        cfg,
        accelerator,
        run_dir,
        model,
        tokenizer,
        optimizer,
        scheduler,
        encoded,
        n_steps,
        threads=threads,
    )
    _start_state(run, resume_dir)
    if cfg.train.ema_decay and run.ema is None:  # a new run: the average starts at the weights
        run.ema = {
            n: p.detach().clone()
            for n, p in accelerator.unwrap_model(model).named_parameters()
            if p.requires_grad
        }
    run.eval_prefix = eval_prefix_for(forward, encoded["validation"], accelerator)
    state, train_set = run.state, encoded["train"]
    assert train_set.labels is not None  # the training split is labelled
    run.metrics = MetricsLogger(run_dir, accelerator, cfg) if accelerator.is_main_process else None
    run.started, run.clock = time.time() - state.elapsed_s, time.time()
    run.setup_s = round(run.clock - called, 3)
    run.progress = _progress(n_steps, cfg, accelerator, state.step)
    model.train()
    while state.step < n_steps and not state.stopped_early:
        batches = epoch_batches(
            train_set.lengths, global_batch, cfg.train.seed, state.epoch, cfg.train.group_by_length
        )
        for micro, global_idx in enumerate(batches):
            if micro < state.micro:
                continue  # trained on before the checkpoint this run resumed from
            tick()  # under train.threads=auto: follow the cores other processes leave free
            # Each process takes its slice of the global batch: N processes see the same
            # examples per step as one process with an N-times larger batch.
            idx = np.array_split(global_idx, world)[accelerator.process_index]
            labels = torch.as_tensor(train_set.labels[idx]).to(accelerator.device)

            with accelerator.accumulate(model):
                with accelerator.autocast():
                    # the whole model, or only the top layers on cached states (fastpath.py)
                    logits, mask = forward(model, idx)
                if distill is None:
                    loss = task_loss(cfg, logits, labels, class_weight)
                else:  # (1 - w) CE + w T^2 KL(teacher_T || student_T); unlabelled rows: KL only
                    loss = distill.loss(logits, labels, idx)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.train.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)  # free the gradients' memory at once
            run.count_batch(loss, len(global_idx), mask)
            if not accelerator.sync_gradients:
                continue  # accumulating: the optimizer stepped only on the last micro-batch
            scheduler.step()
            state.step += 1
            if run.ema is not None:
                update_ema(
                    run.ema, accelerator.unwrap_model(model), cfg.train.ema_decay, state.step
                )
            state.micro = micro + 1
            run.window["steps"] += 1
            epoch_f = state.epoch + (micro + 1) / len(batches)
            if state.step % cfg.train.log_every == 0 or state.step == n_steps:
                _log_train_row(run, epoch_f)
            if run.progress:
                run.progress.update(1)
            if state.step % cfg.train.eval_every == 0 or state.step == n_steps:
                eval_row = _evaluate_and_keep(run, epoch_f)
                if on_eval is not None and on_eval(state.step, eval_row):
                    state.stopped_early = True
                    log.info("stopped at step %d by the caller (a sweep's pruner)", state.step)
            if _checkpoint_due(state.step, cfg):  # after the eval: it holds the eval's outcome
                _save_resumable(run)
            hooks.reached(f"step-{state.step}")  # tests only (LORAFIT_TEST_HOOKS): no-op otherwise
            if state.step >= n_steps or state.stopped_early:
                break
        state.epoch += 1
        state.micro = 0

    if not _checkpoint_due(state.step, cfg):  # the end is always resumable (final test, summary)
        _save_resumable(run)
    if run.progress:
        run.progress.close()
    test_metrics = _final_test(run)
    if accelerator.is_main_process:
        _write_summary(run, description, test_metrics)
        assert run.metrics is not None  # the main process's
        run.metrics.close()
        _finish_outputs(run_dir)
        _point_latest(run_dir)
    accelerator.wait_for_everyone()
    _detach_log_file()
    return run_dir


def _open_run_dir(
    cfg: Config, description: dict, accelerator, existing: Path | None = None, early=()
) -> Path:
    """Create the run directory (or reopen `existing` to resume) and tell the others its name.

    A new directory that cannot be filled (full disk) is removed again: no half-made run.
    """
    import shutil

    from accelerate.utils import broadcast_object_list

    from lorafit.rundir import write_atomic

    holder: list[Any] = [None]  # the main process's run directory, broadcast to the others
    if accelerator.is_main_process:
        run_dir = existing or create_run_dir(cfg.run.dir, cfg.run.name)
        try:
            if existing is None:
                write_atomic(run_dir / "config.yaml", config_to_yaml(cfg))
            write_description(description, run_dir)
            _attach_log_file(run_dir / "train.log", early)
        except (OSError, UserError) as e:
            if existing is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise (
                e
                if isinstance(e, UserError)
                else UserError(f"{run_dir}: cannot write ({e.strerror}); choose a writable run.dir")
            ) from None
        holder = [str(run_dir)]
    if accelerator.num_processes > 1:
        broadcast_object_list(holder)
    log.info("%s run directory: %s", "resuming" if existing else "new", holder[0])
    return Path(holder[0])


class _RunLogHandler(logging.FileHandler):
    """`train.log`; a failed write (full disk) is raised, not printed as a logging traceback."""

    def handleError(self, record):  # noqa: N802 - logging's name
        raise  # noqa: PLE0704 - re-raises the write error logging is handling


class _EarlyLog(logging.Handler):
    """Holds lorafit's log lines from before the run folder exists (loading the model and the
    data, the teacher's labels, the cache plan) for `train.log`; attached at once."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []
        log.addHandler(self)
        log.setLevel(logging.INFO)

    def emit(self, record):
        self.records.append(record)


def _attach_log_file(path: Path, early=()) -> None:
    """Log to `path` (appending on a resume) instead of any earlier run's log in this process;
    `early`: records logged before, written first."""
    _detach_log_file()
    handler = _RunLogHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for record in early:
        handler.handle(record)
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _detach_log_file() -> None:
    for handler in [h for h in log.handlers if isinstance(h, _RunLogHandler)]:
        log.removeHandler(handler)
        handler.close()


def _config_for(config, overrides, resume) -> tuple[Config, Path | None]:
    """The run's config: from `config` + `overrides`, or a resumed run's own config.yaml."""
    from lorafit.config import as_config, load_config
    from lorafit.rundir import require_run_dir

    if resume is None:
        return as_config(config, overrides), None
    # the thread count changes only the speed (and the last bits of sums): a resume may set it
    threads = [o for o in overrides if str(o).startswith("train.threads=")]
    if config is not None or len(threads) != len(overrides):
        raise UserError(
            f"--resume {resume}: a resumed run uses its own config.yaml; drop --config and the "
            "key=value overrides (only --threads may change; start a new run to change settings)"
        )
    run_dir = require_run_dir(resume)
    return load_config(run_dir / "config.yaml", threads), run_dir


def _already_finished(run_dir: Path) -> Path:
    """A resume of a finished run trains nothing; it redoes the plots and the readable log.

    `<run.dir>/latest` stays where it is: it names the newest finished run, and this is not.
    """
    log.info(
        "%s: this run already finished (summary.json exists); nothing to resume. Refreshed its "
        "plots and training_log.txt; start a new run to train more",
        run_dir,
    )
    _finish_outputs(run_dir)
    return run_dir


def _checkpoint_due(step: int, cfg: Config) -> bool:
    every = cfg.train.checkpoint_every
    return bool(every) and step % every == 0


def _save_resumable(run: Run) -> None:
    """A checkpoint to resume from (checkpoint.py); every process adds its RNG state."""
    from accelerate.utils import gather_object

    from lorafit.checkpoint import capture_rng, save_training_state

    accelerator, state = run.accelerator, run.state
    state.elapsed_s = round(time.time() - run.started, 3)
    rng = gather_object([capture_rng()])
    if accelerator.is_main_process:
        save_training_state(
            run.run_dir,
            state.step,
            trainable=trainable_state(accelerator.unwrap_model(run.model)),
            optimizer_state=run.optimizer.state_dict(),
            scheduler_state=run.scheduler.state_dict(),
            state={**asdict(state), "window": run.window},
            best=run.best_weights,
            rng=rng,
            keep_last=run.cfg.train.keep_last,
            ema=None
            if run.ema is None
            else {n: t.to("cpu", copy=True) for n, t in run.ema.items()},
        )
    accelerator.wait_for_everyone()


def _start_state(run: Run, resume_dir: Path | None) -> None:
    """Set the run's state, best weights and train-row window: fresh, or restored for a resume."""
    from lorafit.checkpoint import (
        latest_checkpoint,
        load_training_state,
        prune_checkpoints,
        restore_rng,
        trim_metrics,
    )

    if resume_dir is None:
        return
    accelerator, run_dir = run.accelerator, run.run_dir
    path = latest_checkpoint(run_dir)
    if path is not None:  # else killed before the first checkpoint: start over in the same folder
        saved = load_training_state(path)
        run.window = saved["state"].pop("window")
        run.state = TrainState(
            **{k: v for k, v in saved["state"].items() if k in TrainState.__dataclass_fields__}
        )
        run.best_weights = saved["best"]
        _load_trainable(accelerator.unwrap_model(run.model), saved["trainable"], path)
        if run.cfg.train.ema_decay:
            run.ema = _saved_ema(accelerator.unwrap_model(run.model), saved["ema"], path)
        run.optimizer.load_state_dict(saved["optimizer"])
        run.scheduler.load_state_dict(saved["scheduler"])
    if accelerator.is_main_process:
        kept = trim_metrics(run_dir / "metrics.jsonl", run.state.step)
        prune_checkpoints(run_dir, run.cfg.train.keep_last)
        log.info(
            "resuming at step %d from %s (%d metrics rows kept)",
            run.state.step,
            path or "the start",
            kept,
        )
    _restore_best_dir(run)
    if path is not None:  # last: nothing after this may draw random numbers before training
        rng = saved["rng"]
        restore_rng(
            rng[accelerator.process_index] if accelerator.process_index < len(rng) else rng[0]
        )


def _load_trainable(model, tensors: dict, path: Path) -> None:
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != expected:
        raise UserError(
            f"{path}: its weights do not match the model of config.yaml ({len(set(tensors) ^ expected)} "
            "names differ); was config.yaml edited? Restore it or start a new run"
        )
    model.load_state_dict(tensors, strict=False)


def _saved_ema(model, ema: dict | None, path: Path) -> dict:
    """The checkpoint's moving average, on the model's device (a resume continues it exactly)."""
    expected = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if ema is None or set(ema) != set(expected):
        raise UserError(
            f"{path}: no moving average of these weights (ema.safetensors) although config.yaml sets "
            "train.ema_decay; was config.yaml edited? Restore it or start a new run"
        )
    return {n: t.to(expected[n].device, expected[n].dtype) for n, t in ema.items()}


def _restore_best_dir(run: Run) -> None:
    """Make checkpoint-best/ hold the resumed state's best (a crash may have left a newer one)."""
    import json
    import shutil
    from dataclasses import replace

    model, accelerator, state, best = run.model, run.accelerator, run.state, run.best_weights
    path = run.run_dir / "checkpoint-best"
    if accelerator.is_main_process:
        recover_best_dir(path)
        shutil.rmtree(path.with_name(path.name + ".tmp"), ignore_errors=True)
        if best is None:  # saved after the checkpoint we resume from: it will be redone
            shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        saved_step = json.loads((path / "lorafit_state.json").read_text())["best_step"]
    except (OSError, ValueError, KeyError, TypeError):
        saved_step = None
    if best is None or saved_step == state.best_step:
        return
    unwrapped = accelerator.unwrap_model(model)
    current = trainable_state(unwrapped)
    unwrapped.load_state_dict(best, strict=False)
    assert state.best_step is not None  # best weights come with their step
    best_state = replace(state, step=state.best_step, bad_evals=0, stopped_early=False)
    save_checkpoint(model, run.tokenizer, path, best_state, accelerator)
    unwrapped.load_state_dict(current, strict=False)


def _log_data(encoded: dict[str, Encoded], cfg: Config) -> None:
    from lorafit.teacher.unlabeled import labelled_rows

    names = cfg.data.label_names
    labels = np.asarray(encoded["train"].labels)
    if cfg.task != "classification":  # data.unlabeled rows (NaN) learn from the teacher only
        labelled = labelled_rows(labels)
        if not labelled.all():
            log.info(
                "%d unlabelled training rows learn from the teacher only", int((~labelled).sum())
            )
        labels = labels[labelled]
    if cfg.task == "regression":
        log.info(
            "regression on %s: training values mean %.4f, sd %.4f, range %.4g to %.4g",
            names[0],
            labels.mean(),
            labels.std(),
            labels.min(),
            labels.max(),
        )
    elif cfg.task == "multi_label":
        counts = labels.sum(axis=0).astype(int)
        log.info(
            "%d labels, %.2f a row (%d rows without one); training rows of each: %s",
            len(names),
            labels.sum(1).mean(),
            int((labels.sum(1) == 0).sum()),
            ", ".join(f"{n} {c}" for n, c in zip(names, counts)),
        )
    else:
        _log_classes(labels, names)
    for name, enc in encoded.items():
        lengths = enc.lengths
        log.info(
            "%s: %d rows, tokens per row median %d, p99 %d, max %d; %d truncated to %d tokens",
            name,
            len(lengths),
            np.median(lengths),
            np.percentile(lengths, 99),
            lengths.max(),
            enc.truncated,
            cfg.model.max_length,
        )


def _log_classes(labels: np.ndarray, names: list[str]) -> None:
    labelled = labels[labels >= 0]  # data.unlabeled rows (-100) learn from the teacher only
    counts = np.bincount(labelled, minlength=len(names))
    log.info(
        "%d classes, training rows of each: %s",
        len(names),
        ", ".join(f"{n} {c}" for n, c in zip(names, counts)),
    )
    if len(labelled) < len(labels):
        log.info(
            "%d unlabelled training rows learn from the teacher only", len(labels) - len(labelled)
        )


def _progress(n_steps: int, cfg: Config, accelerator, done: int = 0):
    """The tqdm bar, on a terminal only: into a file or pipe its redraws would be glued to the
    log lines (those, every `train.log_every` steps, are the progress there)."""
    if not (cfg.log.progress and accelerator.is_main_process and _is_terminal(sys.stderr)):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n_steps, initial=done, desc="train", unit="step", dynamic_ncols=True)


def _is_terminal(stream) -> bool:
    """A terminal, or a Jupyter notebook (tqdm.auto draws a widget there)."""
    if type(stream).__module__.startswith("ipykernel"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def _update_progress(progress, row: dict) -> None:
    log.info(
        "step %d: loss %.4f lr %.3g %.1f samples/s %.0f tokens/s padding %.1f%% memory %.0f MB (peak %.0f MB)",
        row["step"],
        row["train_loss"],
        row["lr"],
        row["samples_per_s"],
        row["tokens_per_s"],
        100 * row["padding_share"],
        row["memory_now_mb"],
        row["memory_mb"],
    )
    if progress:
        _postfix(progress, loss=f"{row['train_loss']:.4f}", samples_s=f"{row['samples_per_s']:.1f}")


def _postfix(progress, **values: str) -> None:
    """Live figures on the bar: the newest loss and samples/s beside the newest eval accuracy."""
    shown = getattr(progress, "lorafit_postfix", {})
    shown.update(values)
    progress.lorafit_postfix = shown
    progress.set_postfix(shown, refresh=False)


def _log_train_row(run: Run, epoch_f: float) -> None:
    """A train row (metrics.jsonl, log, bar) for the steps since the last; a new window."""
    row = _train_row(run, epoch_f, time.time() - run.clock)
    run.clock, run.window = time.time(), _new_window()
    if run.metrics:
        run.metrics.write(row)
    _update_progress(run.progress, row)


def _train_row(run: Run, epoch_f: float, elapsed: float) -> dict:
    accelerator, window = run.accelerator, run.window
    steps = max(1, window["steps"])
    total_tokens = window["tokens"] + window["padded"]
    loss = window["loss"]
    if accelerator.num_processes > 1:  # each process saw its share of the batch: average them
        loss = accelerator.reduce(
            torch.tensor([loss], device=accelerator.device), reduction="mean"
        ).item()
    return {
        "kind": "train",
        "step": run.state.step,
        "epoch": round(epoch_f, 4),
        "time_s": round(time.time() - run.started, 3),
        "lr": run.scheduler.get_last_lr()[0],
        "train_loss": loss / steps,
        "samples_per_s": window["samples"] / max(elapsed, 1e-9),
        "tokens_per_s": window["tokens"] / max(elapsed, 1e-9),
        "padding_share": window["padded"] / max(total_tokens, 1),
        "memory_mb": round(peak_memory_mb(accelerator.device), 1),
        "memory_now_mb": round(current_memory_mb(accelerator.device), 1),
    }


def _evaluate_and_keep(run: Run, epoch_f: float) -> dict:
    """Evaluate; on a new best keep its weights and save the checkpoint; count patience.

    Returns the eval row written to metrics.jsonl.
    """
    cfg, state, accelerator = run.cfg, run.state, run.accelerator
    with ema_weights(run):  # train.ema_decay: the average is what is evaluated and kept
        m = evaluate_split(
            run.model,
            run.encoded["validation"],
            cfg,
            run.tokenizer.pad_token_id,
            accelerator,
            run.eval_prefix,
        )
        values = eval_values(m)
        is_best = improved(values[cfg.train.metric], state.best_value, cfg.train.metric)
        if is_best:
            state.best_value, state.best_step, state.bad_evals = (
                values[cfg.train.metric],
                state.step,
                0,
            )
            state.best_thresholds = m.get("thresholds")  # multi-label: saved with the checkpoint
            run.best_weights = trainable_state(accelerator.unwrap_model(run.model))
            save_checkpoint(
                run.model, run.tokenizer, run.run_dir / "checkpoint-best", state, accelerator
            )
    if not is_best:
        state.bad_evals += 1
        if cfg.train.patience and state.bad_evals >= cfg.train.patience:
            state.stopped_early = True
    row = {
        "kind": "eval",
        "step": state.step,
        "epoch": round(epoch_f, 4),
        "time_s": round(time.time() - run.started, 3),
        **values,
        "is_best": is_best,
    }
    if run.metrics:
        run.metrics.write(row)
    if run.progress:
        _postfix(
            run.progress,
            **{_SHORT.get(cfg.train.metric, "eval"): f"{values[cfg.train.metric]:.4f}"},
            best=f"{state.best_value:.4f}",
        )
    log.info("step %d: eval %s%s", state.step, headline(m), " (best)" if is_best else "")
    if state.stopped_early:
        log.info(
            "early stop at step %d: no %s improvement in %d evaluations",
            state.step,
            cfg.train.metric,
            cfg.train.patience,
        )
    return row


#: the progress bar's short name of train.metric
_SHORT = {
    "eval_accuracy": "acc",
    "eval_f1": "f1",
    "eval_mcc": "mcc",
    "eval_precision": "prec",
    "eval_recall": "rec",
    "eval_loss": "val_loss",
    "eval_pearson": "pearson",
    "eval_spearman": "spearman",
    "eval_macro_f1": "macro_f1",
    "eval_micro_f1": "micro_f1",
}


def _final_test(run: Run) -> dict | None:
    """Restore the best weights and score the labelled test split, if there is one."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    test = run.encoded.get("test")
    if test is None or test.labels is None:
        return None
    if run.best_weights:
        accelerator.unwrap_model(run.model).load_state_dict(run.best_weights, strict=False)
    m = evaluate_split(
        run.model,
        test,
        cfg,
        run.tokenizer.pad_token_id,
        accelerator,
        thresholds=state.best_thresholds,
    )
    m["input"] = (
        cfg.data.test
        or f"{len(test.ids)} rows held out of {cfg.data.train} (data.test_size={cfg.data.test_size:g})"
    )
    if accelerator.is_main_process:
        (run.run_dir / "evaluations").mkdir(exist_ok=True)
        stem = Path(cfg.data.test).stem if cfg.data.test else "heldout"
        write_json(run.run_dir / "evaluations" / f"test-{stem}.json", m)
        tested = {"test_" + k[len("eval_") :]: v for k, v in eval_values(m).items()}
        assert run.metrics is not None  # the main process's
        run.metrics.write(
            {
                "kind": "test",
                "step": state.best_step or state.step,
                "time_s": round(time.time() - run.started, 3),
                **tested,
            }
        )
        log.info("test (best checkpoint):\n%s", format_metrics(m))
    return m


def _write_summary(run: Run, description: dict, test_metrics: dict | None) -> None:
    from lorafit.rundir import read_jsonl

    run_dir, cfg, state, accelerator, started = (
        run.run_dir,
        run.cfg,
        run.state,
        run.accelerator,
        run.started,
    )

    rows = read_jsonl(run_dir / "metrics.jsonl")
    best_eval = next(
        (r for r in rows if r["kind"] == "eval" and r["step"] == state.best_step), None
    )
    summary = {
        "run_name": cfg.run.name,
        "run_dir": str(run_dir),
        "command": command_line(),
        "model_name": cfg.model.name,
        "task": cfg.task,
        "label_names": list(cfg.data.label_names),
        "metric": cfg.train.metric,
        "best_value": state.best_value,
        "best_step": state.best_step,
        "final_step": state.step,
        "stopped_early": state.stopped_early,
        "best_eval": best_eval,
        "test": test_metrics,
        "params": description["params"],
        **({"teacher": description["teacher"]} if "teacher" in description else {}),
        "seed": cfg.train.seed,
        # texts cut to model.max_length tokens, per split (also in train.log)
        "truncated_rows": {k: e.truncated for k, e in run.encoded.items()},
        "max_length": cfg.model.max_length,
        "device": str(accelerator.device),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        **(run.threads.record() if run.threads is not None else {}),
        "wall_time_s": round(time.time() - started, 3),  # the training loop's (all calls)
        # this call's time before its first step: reading and tokenizing the data, loading the
        # model, a teacher's logits, building the activation cache (a resume: its own setup)
        "setup_time_s": run.setup_s,
        "git_commit": git_commit(),
        "versions": versions(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(run_dir / "summary.json", summary)
    log.info(
        "best %s %.4f at step %d; wall time %.1f s (and %.1f s before the first step)",
        cfg.train.metric,
        state.best_value,
        state.best_step,
        summary["wall_time_s"],
        summary["setup_time_s"],
    )


def _point_latest(run_dir: Path) -> None:
    """`<run.dir>/latest` -> the newest finished run (a symlink; skipped where links fail)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest-{run_dir.name}"
    try:
        if link.exists() and not link.is_symlink():
            return  # a real folder named 'latest' belongs to the user
        tmp.symlink_to(run_dir.name)
        tmp.replace(link)
    except OSError:
        log.info("could not point %s at %s", link, run_dir)


def _finish_outputs(run_dir: Path) -> None:
    """The checkpoint's model card; plots and the readable training log, when present."""
    from lorafit.export import write_model_card

    write_model_card(run_dir)  # replaces PEFT's placeholder README.md in checkpoint-best/
    try:
        from lorafit.plots import write_plots
        from lorafit.runlog import write_training_log
    except ImportError:
        return
    write_plots(run_dir)
    write_training_log(run_dir)

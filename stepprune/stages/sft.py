"""The sft stage: pruned shards -> a model that writes [SKIP]-compressed chains of thought.

TRL's ``SFTTrainer`` on prompt/completion rows (loss on the completion only, see
``stepprune.train.sft_data``), full fine-tuning or PEFT LoRA. ``sft_args`` is handed to
``trl.SFTConfig`` (a number PyYAML left a string, ``1e-5``, converted: ``config.coerce_numbers``)
and ``lora`` to ``peft.LoraConfig`` (an unknown key in either is a
``ValueError`` naming it). The stage owns ``output_dir`` (``out``) and ``seed`` (``seed``):
``sft_args`` may not set them, as in the grpo stage. ``max_length`` defaults to ``max_tokens``
(TRL's own default, 1024, would silently cut long rows).
``model_init_kwargs`` (e.g. ``dtype``) is used to load the model here, because the model has to
be loaded before the trainer to give it the [SKIP] token (``stepprune.train.skip_token``).

With LoRA, the [SKIP] rows of the input embedding and output head are trained through PEFT's
``trainable_token_indices`` unless ``lora`` names ``trainable_token_indices`` or
``modules_to_save`` itself. ``<out>`` receives the model (or adapter), tokenizer, chat template
and a model card; ``merge`` also writes LoRA-merged full weights to ``<out>/merged`` for serving.
Nothing is deleted unless ``overwrite``; ``resume`` continues from the newest checkpoint, starts
afresh when ``out`` is empty or missing, and refuses an ``out`` holding files but no checkpoint.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from stepprune.train.peft import lora_config, merge

log = logging.getLogger(__name__)


@dataclass
class SFTStageConfig:
    input: str | list[str] = ""  # pruned shards: a directory, a file, or a list of them
    out: str = "runs/sft"
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    correct_only: bool = True
    max_tokens: int | None = None  # drop rows longer than this (prompt+completion+EOS tokens)
    kappa: float | None = None  # keep only rows pruned at this kappa; None: any
    strategy: str | None = None  # keep only rows of this prune strategy; None: any
    unpruned_fraction: float = 0.0  # this share of rows trains on the original thinking
    seed: int = 0
    lora: dict | None = None  # peft.LoraConfig kwargs; None: full fine-tuning
    sft_args: dict = field(default_factory=dict)  # trl.SFTConfig kwargs
    merge: bool = False
    resume: bool | str = False  # True: newest checkpoint in out (if any); or a checkpoint path
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.unpruned_fraction <= 1.0:
            raise ValueError(f"unpruned_fraction must be in [0, 1], got {self.unpruned_fraction}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        for key, owner in (("output_dir", "out"), ("seed", "seed")):
            if key in self.sft_args:
                raise ValueError(f"sft_args.{key}: set the stage's `{owner}` instead")
        from trl import SFTConfig

        from stepprune.config import coerce_numbers

        self.sft_args = coerce_numbers(SFTConfig, self.sft_args, "sft_args")


def run(cfg: SFTStageConfig) -> dict:
    from transformers import AutoTokenizer

    from stepprune.models import model_label, resolve_model
    from stepprune.shards import check_apart
    from stepprune.train.sft_data import build_dataset, pruned_files
    from stepprune.train.skip_token import add_skip_token, fit_embeddings

    files = pruned_files(cfg.input)
    check_apart(cfg.out, files)
    if cfg.lora:
        lora_config(cfg.lora)  # a bad key fails here, before the output directory is touched
    model_path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    token = add_skip_token(tokenizer)
    dataset, report = build_dataset(files, cfg, tokenizer)
    args, init_kwargs = sft_config(cfg)
    # Process 0 clears the directory before any other process looks at it (multi-GPU runs).
    with args.main_process_first(local=False, desc="sft output directory"):
        checkpoint = prepare_out(cfg)
    model = load_model(model_path, init_kwargs)
    rows = fit_embeddings(model, token)
    trainer = make_trainer(cfg, args, model, tokenizer, dataset, token.token_id)
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(cfg.out)
    except Exception as e:
        step = trainer.state.global_step if trainer.is_world_process_zero() else None
        if (failure := _save_failure(Path(cfg.out), e, step)) is e:
            raise
        raise failure from e
    summary = _summary(cfg, trainer, result, report, token.token_id, rows, checkpoint)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(cfg.out)
        trainer.save_state()
        if cfg.merge:
            summary["merged"] = str(merge(trainer, tokenizer, Path(cfg.out)))
        from stepprune.train.sft_card import write_model_card

        write_model_card(cfg, model_label(cfg.model), report, summary)
        log.info("outputs written to %s by process %d", cfg.out, trainer.args.process_index)
    return summary


def sft_config(cfg: SFTStageConfig):
    """(``trl.SFTConfig`` from ``sft_args`` plus the stage's defaults, model_init_kwargs)."""
    from trl import SFTConfig

    kwargs = dict(cfg.sft_args)
    init_kwargs = dict(kwargs.pop("model_init_kwargs", None) or {})
    kwargs.setdefault("max_length", cfg.max_tokens)
    if cfg.max_tokens and kwargs["max_length"] and kwargs["max_length"] < cfg.max_tokens:
        log.warning(
            "sft_args.max_length %d < max_tokens %d: TRL truncates the longer rows",
            kwargs["max_length"],
            cfg.max_tokens,
        )
    try:
        return SFTConfig(output_dir=str(cfg.out), seed=cfg.seed, **kwargs), init_kwargs
    except TypeError as e:  # an unknown key: the CLI reports ValueErrors, not TypeErrors
        raise ValueError(f"sft_args: {e}") from e


def prepare_out(cfg: SFTStageConfig) -> str | None:
    """Apply ``overwrite``/``resume`` to the output directory; the checkpoint to resume, if any.

    Runs on every process, process 0 first (``run``): the others then find ``out`` cleared.
    """
    from stepprune.train.checkpoints import last_complete_checkpoint

    out = Path(cfg.out)
    busy = out.is_dir() and any(out.iterdir())
    if isinstance(cfg.resume, str):
        if not Path(cfg.resume).is_dir():
            raise FileNotFoundError(f"resume: no checkpoint directory {cfg.resume}")
        return cfg.resume
    checkpoint = last_complete_checkpoint(out) if cfg.resume and out.is_dir() else None
    if checkpoint is not None:
        log.info("resuming from %s", checkpoint)
        return checkpoint
    if busy and not cfg.overwrite:
        if cfg.resume:
            raise FileExistsError(
                f"resume: {out} holds files but no checkpoint to resume from; "
                "pass overwrite to replace them or choose another out"
            )
        raise FileExistsError(f"{out} exists; pass overwrite to replace it or resume to continue")
    if cfg.resume:
        log.info("resume: no checkpoint in %s yet; starting from the model", out)
    if busy:
        shutil.rmtree(out)
    return None


def _save_failure(out: Path, error: Exception, step: int | None) -> Exception:
    """What to raise for ``error`` out of training. When it broke the save of checkpoint
    ``step`` (a full disk), that checkpoint lacks a readable ``trainer_state.json`` (written
    last): remove it, so that nothing takes it for a checkpoint, and say so in one line (an
    OSError) rather than a SafetensorError or torch traceback. ``step`` None: not process 0."""
    checkpoint = out / f"checkpoint-{step}"
    partial = step is not None and checkpoint.is_dir() and not _readable(checkpoint)
    if not partial and "No space left on device" not in str(error):
        return error
    if partial:
        shutil.rmtree(checkpoint, ignore_errors=True)
    removed = f"; removed the partial {checkpoint.name}" if partial else ""
    free = shutil.disk_usage(out).free / 2**20 if out.is_dir() else float("nan")
    return OSError(
        f"{out}: saving failed ({type(error).__name__}: {error}){removed}; "
        f"{free:.0f} MiB free there"
    )


def _readable(checkpoint: Path) -> bool:
    import json

    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def load_model(path: str, init_kwargs: dict):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, **init_kwargs)


def peft_config(lora: dict, model, token_id: int):
    """``lora_config(lora)`` plus the [SKIP] rows as trainable tokens (module docstring)."""
    from stepprune.train.skip_token import lora_token_targets

    kwargs = dict(lora)
    if kwargs.get("trainable_token_indices") is None and not kwargs.get("modules_to_save"):
        kwargs["trainable_token_indices"] = lora_token_targets(model, token_id)
    return lora_config(kwargs)


def make_trainer(cfg: SFTStageConfig, args, model, tokenizer, dataset, token_id: int):
    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora, model, token_id) if cfg.lora else None,
    )
    if cfg.lora:
        expose_head_bias(trainer.model)
    return trainer


def expose_head_bias(model) -> None:
    """Let TRL's fused LM-head loss read ``bias`` from a PEFT-wrapped output head.

    TRL 1.16 computes the loss from ``lm_head.weight`` and ``lm_head.bias`` directly. PEFT's
    ``TrainableTokensWrapper`` answers ``weight`` with the weight holding the trained [SKIP] row,
    so gradients reach that row, but it has no ``bias`` and the first step fails. Bias-free
    heads (Qwen, Llama, SmolLM2) get an explicit ``None``; a head with a bias is refused rather
    than silently trained without it.
    """
    head = model.get_output_embeddings()
    try:
        head.bias  # noqa: B018 - probing whether the attribute resolves
        return
    except AttributeError:
        base = getattr(head, "original_module", None)
    if base is None or base.bias is not None:
        raise ValueError(f"cannot train [SKIP] rows of an output head with a bias: {type(head)}")
    head.bias = None


def _summary(cfg, trainer, result, report, token_id: int, rows, checkpoint) -> dict:
    logs = [h for h in trainer.state.log_history if "loss" in h]
    losses = [h["loss"] for h in logs]
    return {
        "out": str(cfg.out),
        "merged": None,
        "rows": report.rows,
        "unpruned": report.unpruned,
        "dropped": {
            "incorrect": report.dropped_incorrect,
            "kappa": report.dropped_kappa,
            "strategy": report.dropped_strategy,
            "long": report.dropped_long,
        },
        "lora": bool(cfg.lora),
        "skip_token_id": token_id,
        "vocab_rows": {"before": rows[0], "after": rows[1]},
        "resumed_from": checkpoint,
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_runtime": result.metrics.get("train_runtime"),
        "last_log": logs[-1] if logs else None,
    }


def format_summary(cfg: SFTStageConfig, summary: dict) -> str:
    """What the CLI prints after a run."""

    def num(x) -> str:
        return "-" if x is None else f"{x:.4f}"

    rows = summary["vocab_rows"]
    resumed = f" (resumed from {summary['resumed_from']})" if summary["resumed_from"] else ""
    lines = [
        f"rows            {summary['rows']} ({summary['unpruned']} unpruned)",
        f"steps           {summary['global_step']}{resumed}",
        f"loss            first {num(summary['first_loss'])}  last {num(summary['last_loss'])}  "
        f"mean {num(summary['train_loss'])}",
        f"[SKIP]          token {summary['skip_token_id']}; "
        f"vocabulary rows {rows['before']} -> {rows['after']}",
        f"model: {cfg.out}",
    ]
    if summary["merged"]:
        lines.append(f"merged: {summary['merged']}")
    return "\n".join(lines)

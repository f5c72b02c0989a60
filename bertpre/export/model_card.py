"""Model cards: the README.md of an exported model, saying what it is, how it was made and how to use it.

Each card opens with the Hugging Face metadata header (YAML between ``---`` lines): library,
pipeline tag, license and language when known, datasets and base model when they are hub ids,
tags, and a ``model-index`` with the evaluation results, which the hub shows and indexes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from transformers import PretrainedConfig

from bertpre.core.glue_tasks import GLUE_TASKS

GLUE_HUB_DATASET = "nyu-mll/glue"
"""The hub id of GLUE, whose validation splits are the dev.tsv files `bertpre finetune --task` reads."""

# Our metric names → the hub's metric ids and display names.
_HUB_METRICS = {"accuracy": ("accuracy", "Accuracy"), "f1": ("f1", "F1 (class 1)"),
                "matthews_correlation": ("matthews_correlation", "Matthews correlation"),
                "pearson": ("pearsonr", "Pearson correlation"), "spearman": ("spearmanr", "Spearman correlation")}
_HUB_CACHE_SNAPSHOT = re.compile(r"models--(?P<id>[^/]+)/snapshots/[^/]+$")


def pretraining_model_card(bert: PretrainedConfig, run: Any, state: dict, checkpoint: Path, command: str,
                           export: Any, datasets: Sequence[str] = ()) -> str:
    """The card of a pretrained encoder: architecture, objective, data, steps, final evaluation, use.

    ``export`` is the `ExportConfig` (license, language, output); ``datasets`` the hub datasets the
    run's data was prepared from.
    """
    evaluation = {k: v for k, v in state.get("last_eval", {}).items() if k != "step"}
    evaluated_at = int(state.get("last_eval", {}).get("step", state["step"]))
    current = evaluated_at == state["step"]  # a checkpoint between evaluations carries an older one
    name = Path(export.output).name
    header = card_header(pipeline_tag="fill-mask", license=export.license, language=export.language,
                         datasets=datasets, base_model=hub_model_id(run.init_from) if run.init_from else None,
                         tags=[bert.model_type, "fill-mask", "bertpre"],
                         model_index=_pretraining_model_index(name, evaluation, run, datasets) if current else [])
    family = _FAMILIES.get(bert.model_type, bert.model_type)
    lines = [
        header,
        f"# {family} pretrained with bertpre", "",
        f"- architecture: {family}, {bert.num_hidden_layers} layers, hidden {bert.hidden_size}, "
        f"{bert.num_attention_heads} heads, feed-forward {bert.intermediate_size}, vocabulary {bert.vocab_size:,}"
        + _attention_pattern(bert),
        f"- objective: masked-LM ({run.masking.mlm_probability:.0%} of tokens, 80/10/10"
        f"{', whole words' if run.masking.whole_word_mask else ''})"
        f"{' + next-sentence prediction' if run.objective == 'mlm_nsp' else ' only'}",
        f"- data: `{run.data}`",
        f"- steps: {state['step']:,} (global batch {run.batches.global_batch_size} sequences, {run.optimization.optimizer}, "
        f"peak learning rate {run.optimization.learning_rate})",
        f"- tokens seen: {state['tokens_seen']:,}",
        f"- checkpoint: `{checkpoint}`",
    ]
    if evaluation:
        title = ("## Final evaluation (held-out documents)" if current else
                 f"## Last evaluation, at step {evaluated_at:,} of {state['step']:,} (held-out documents)")
        lines += ["", title, "", "| metric | value |", "|---|---|"]
        lines += [f"| {k.replace('eval_', '')} | {v:.4f} |" for k, v in evaluation.items()]
    lines += ["", "## Use", "", "```python", "from transformers import pipeline",
              'fill = pipeline("fill-mask", model="PATH/TO/THIS/DIRECTORY")', 'fill("the [MASK] of the story.")',
              "```", "", "## Produced by", "", "```bash", command, "```", ""]
    return "\n".join(lines)


_FAMILIES = {"bert": "BERT", "modernbert": "ModernBERT"}


def _attention_pattern(config: Any) -> str:
    """ModernBERT's alternation of global and local layers, as the card states it (nothing for BERT)."""
    if config.model_type != "modernbert":
        return ""
    local = sum(kind == "sliding_attention" for kind in config.layer_types)
    return (f"; rotary positions, GeGLU, {len(config.layer_types) - local} global and {local} local layers "
            f"(window {config.local_attention})")


def classifier_model_card(config: Any, task: Any, model_config: Any, best: dict[str, Any], output: Path) -> str:
    """The card of a fine-tuned classifier: base model, task, labels, best epoch and its metrics, use.

    License and language are the `FinetuneConfig`'s, else those of the base model's card.
    """
    base_card = read_card_metadata(config.model)
    base_model = hub_model_id(config.model)
    evaluated_on = _classifier_eval_dataset(config, task.name)
    datasets = _classifier_hub_datasets(config)
    header = card_header(
        pipeline_tag="text-classification", license=config.license or base_card.get("license"),
        language=config.language or _as_list(base_card.get("language")),
        datasets=datasets, base_model=base_model,
        tags=[model_config.model_type, "text-classification", "bertpre"] + (["glue"] if GLUE_HUB_DATASET in datasets else []),
        model_index=[{"name": f"{(base_model or Path(config.model).name).split('/')[-1]}-{task.name}",
                      "results": [{"task": {"type": "text-classification", "name": "Text Classification"},
                                   "dataset": evaluated_on, "metrics": hub_metrics(best["metrics"])}]}])
    return "\n".join([
        header,
        f"# {task.name} classifier fine-tuned with bertpre", "",
        f"- base model: `{base_model or config.model}`",
        f"- task: {task.name} ({'regression' if task.regression else f'{len(task.label_list)} classes'})",
        f"- labels: {model_config.id2label if not task.regression else 'score'}",
        f"- epoch kept: {best['epoch']} of {config.epochs}"
        + (f", chosen on {best['chosen_on']}" if best.get("chosen_on") else ""),
        *[f"- eval {k}: {v:.4f}" for k, v in best["metrics"].items()], "",
        "```python", "from transformers import pipeline",
        f'classify = pipeline("text-classification", model="{output / "model"}")', "```", ""])


def card_header(pipeline_tag: str, tags: Sequence[str], model_index: list[dict[str, Any]],
                license: Optional[str] = None, language: Sequence[str] = (), datasets: Sequence[str] = (),
                base_model: Optional[str] = None) -> str:
    """The YAML metadata header of a card; unknown facts (no license given, no hub dataset) are left out."""
    metadata: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": pipeline_tag}
    if license:
        metadata["license"] = license
    if language:
        metadata["language"] = list(language)
    if datasets:
        metadata["datasets"] = sorted(set(datasets))
    if base_model:
        metadata["base_model"] = base_model
    metadata["tags"] = list(tags)
    if model_index:
        metadata["model-index"] = model_index
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---\n"


def hub_metrics(metrics: dict[str, float]) -> list[dict[str, Any]]:
    """Evaluation metrics as model-index entries (type, value, name), values unchanged."""
    entries = []
    for key, value in metrics.items():
        metric_type, display = _HUB_METRICS.get(key, (key, key))
        entries.append({"type": metric_type, "value": float(value), "name": display})
    return entries


def hub_dataset_id(spec: str) -> Optional[str]:
    """The hub dataset id of an ``hf:NAME[:CONFIG][@SPLIT]`` input; None for anything else."""
    if not spec.startswith("hf:"):
        return None
    return spec[3:].partition("@")[0].partition(":")[0] or None


def hub_model_id(path: Optional[str]) -> Optional[str]:
    """The hub id of a model directory that is a snapshot in the Hugging Face cache
    (``…/models--ORG--NAME/snapshots/SHA``); None for any other directory, whose origin is unknown."""
    if not path:
        return None
    match = _HUB_CACHE_SNAPSHOT.search(Path(path).resolve().as_posix())
    return match.group("id").replace("--", "/") if match else None


def read_card_metadata(model_dir: str) -> dict[str, Any]:
    """The metadata header of a model directory's README.md; empty when it has none or it is unreadable."""
    card = Path(model_dir) / "README.md"
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return {}
    try:
        metadata = yaml.safe_load(text[4:text.index("\n---", 4)])
    except yaml.YAMLError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _as_list(value: Any) -> list[str]:
    """A card's ``language``, which may be one code or a list of them."""
    if not value:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _pretraining_model_index(name: str, evaluation: dict[str, float], run: Any,
                             datasets: Sequence[str]) -> list[dict[str, Any]]:
    """The held-out masked-LM accuracy (and perplexity) as a model-index; empty without a final evaluation."""
    if "eval_mlm_accuracy" not in evaluation:
        return []
    data = datasets[0] if len(datasets) == 1 else Path(run.data).name
    metrics = [{"type": "accuracy", "value": float(evaluation["eval_mlm_accuracy"]), "name": "Masked-LM accuracy"}]
    if "eval_perplexity" in evaluation:
        metrics.append({"type": "perplexity", "value": float(evaluation["eval_perplexity"]), "name": "Perplexity"})
    return [{"name": name, "results": [{"task": {"type": "fill-mask", "name": "Masked Language Modeling"},
                                        "dataset": {"type": data, "name": f"{data} (held-out documents)",
                                                    "split": "eval"},
                                        "metrics": metrics}]}]


def _classifier_hub_datasets(config: Any) -> list[str]:
    """The hub datasets a classifier was trained or evaluated on: GLUE when a preset's files came from
    data_dir, and those of ``hf:`` train and eval files."""
    ids = [hub_dataset_id(spec) for spec in (config.train_file or "", config.eval_file or "")]
    if config.task in GLUE_TASKS and (config.train_file is None or config.eval_file is None):
        ids.append(GLUE_HUB_DATASET)
    return [i for i in ids if i]


def _classifier_eval_dataset(config: Any, task_name: str) -> dict[str, Any]:
    """The model-index ``dataset`` of a classifier: GLUE's validation split for a preset read from
    data_dir, the hub dataset of an ``hf:`` eval file, else the task and file it was evaluated on."""
    preset = GLUE_TASKS.get(config.task) if config.task else None
    if preset is not None and config.eval_file is None:
        split = "validation" + preset.dev_file[len("dev"):-len(".tsv")]
        return {"type": GLUE_HUB_DATASET, "name": f"GLUE {config.task.upper()}", "config": config.task, "split": split}
    hub = hub_dataset_id(config.eval_file or "")
    if hub is not None:
        config_name = config.eval_file[3:].partition("@")[0].partition(":")[2]
        split = config.eval_file.partition("@")[2]
        return {"type": hub, "name": hub, **({"config": config_name} if config_name else {}),
                **({"split": split} if split else {})}
    return {"type": task_name, "name": f"{task_name} ({Path(config.eval_file).name})"}

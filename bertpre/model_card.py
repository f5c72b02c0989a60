"""Model cards: the README.md of an exported model, saying what it is, how it was made and how to use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import BertConfig


def pretraining_model_card(bert: BertConfig, run: Any, state: dict, checkpoint: Path, command: str) -> str:
    """The card of a pretrained encoder: architecture, objective, data, steps, final evaluation, use."""
    evaluation = {k: v for k, v in state.get("last_eval", {}).items() if k != "step"}
    lines = [
        "---", "library_name: transformers", "tags: [bert, fill-mask, bertpre]", "---", "",
        "# BERT pretrained with bertpre", "",
        f"- architecture: BERT, {bert.num_hidden_layers} layers, hidden {bert.hidden_size}, "
        f"{bert.num_attention_heads} heads, feed-forward {bert.intermediate_size}, vocabulary {bert.vocab_size:,}",
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
        lines += ["", "## Final evaluation (held-out documents)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k.replace('eval_', '')} | {v:.4f} |" for k, v in evaluation.items()]
    lines += ["", "## Use", "", "```python", "from transformers import pipeline",
              'fill = pipeline("fill-mask", model="PATH/TO/THIS/DIRECTORY")', 'fill("the [MASK] of the story.")',
              "```", "", "## Produced by", "", "```bash", command, "```", ""]
    return "\n".join(lines)


def classifier_model_card(config: Any, task: Any, model_config: Any, best: dict[str, Any], output: Path) -> str:
    """The card of a fine-tuned classifier: base model, task, labels, best epoch and its metrics, use."""
    return "\n".join([
        f"# {task.name} classifier fine-tuned with bertpre", "",
        f"- base model: `{config.model}`",
        f"- task: {task.name} ({'regression' if task.regression else f'{len(task.label_list)} classes'})",
        f"- labels: {model_config.id2label if not task.regression else 'score'}",
        f"- best epoch: {best['epoch']} of {config.epochs}",
        *[f"- eval {k}: {v:.4f}" for k, v in best["metrics"].items()], "",
        "```python", "from transformers import pipeline",
        f'classify = pipeline("text-classification", model="{output / "model"}")', "```", ""])

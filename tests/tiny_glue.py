"""A tiny BERT directory and tiny GLUE-format task folders, for fast glue and model-card tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from bertpre.core.configs import ModelConfig
from bertpre.model.hf_directory import export_model
from bertpre.model.bert import BertForPreTraining, bert_config

from .conftest import REPO

_POSITIVE = ["good", "great", "lovely", "charming", "wonderful", "fine"]
_NEGATIVE = ["bad", "awful", "dull", "boring", "terrible", "weak"]


def write_tiny_model(output: Path, card: str | None = None) -> Path:
    """A one-layer, 32-wide BERT with the repository's tokenizer, exported as a Hugging Face directory."""
    torch.manual_seed(0)
    shape = ModelConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return export_model(BertForPreTraining(bert_config(shape)), output, tokenizer_dir=REPO / "tokenizer",
                        model_card=card)


def write_tiny_glue(data_dir: Path, rows: int = 24) -> Path:
    """SST-2, CoLA and STS-B folders as GLUE distributes them (CoLA without a header), ``rows`` each split."""
    generator = random.Random(0)
    for task, header in (("SST-2", "sentence\tlabel"), ("CoLA", None), ("STS-B", "sentence1\tsentence2\tscore")):
        (data_dir / task).mkdir(parents=True, exist_ok=True)
        for split in ("train.tsv", "dev.tsv"):
            lines = [header] if header else []
            for i in range(rows):
                label = i % 2
                word = generator.choice(_POSITIVE if label else _NEGATIVE)
                sentence = f"the film was {word} and {generator.choice(_POSITIVE + _NEGATIVE)} ."
                if task == "SST-2":
                    lines.append(f"{sentence}\t{label}")
                elif task == "CoLA":
                    lines.append(f"src\t{label}\t\t{sentence}")
                else:
                    lines.append(f"{sentence}\tthe film was {word} .\t{generator.uniform(0, 5):.2f}")
            (data_dir / task / split).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data_dir

"""The whole pipeline in one call, offline, on the built-in corpus by default: what `make quickstart` runs.

tokenizer → prepare → pretrain a tiny BERT → export → fine-tune a classifier on a labelled task
derived from the same corpus (which standard-library package a documentation paragraph comes
from) → predict → fill-mask through vanilla ``transformers.pipeline`` → plots and report.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Optional

from bertpre.core.config import config_from_dict
from bertpre.core.configs import (BUILTIN_PYTHON_DOCS, MODEL_SIZES, CorpusConfig, ExportConfig, FinetuneConfig, ModelConfig,
                             PredictConfig, PrepareConfig, PretrainConfig, QuickstartConfig, TokenizerConfig)
from bertpre.readers.corpus import read_documents
from bertpre.core.errors import BertpreError
from bertpre.core.locking import output_lock
from bertpre.export.export import export_checkpoint
from bertpre.tasks.finetune import finetune
from bertpre.tasks.predict import predict
from bertpre.training.preemption import exit_status
from bertpre.data.prepare import prepare_pretraining_data
from bertpre.training.pretrain import PretrainSummary, pretrain
from bertpre.runners.report import write_report
from bertpre.tokenizer.train import train_tokenizer

# The pretraining steps see each pair several times over: five passes of pair creation give them
# five different cuts and random partners instead (and an IsNext ratio that is 0.5 to ±0.005).
QUICKSTART_DUPE_FACTOR = 5

FILL_MASK_PROMPTS = [
    "the [MASK] module provides regular expression matching operations.",
    "return a new [MASK] containing the items of the sequence.",
    "this function raises a [MASK] if the file does not exist.",
]


class PretrainingStopped(Exception):
    """Pretraining was stopped by a signal (SIGTERM, SIGUSR1) after saving a checkpoint: the quickstart ends there
    rather than export and fine-tune a half-trained model, with the exit status `bertpre pretrain` would have."""

    def __init__(self, run: PretrainSummary) -> None:
        super().__init__(f"quickstart: pretraining was stopped by {run.stop_signal} (checkpoint in {run.checkpoint}); "
                         "export and fine-tuning skipped; run the quickstart again to start over")
        self.exit_status = exit_status(run.stop_signal, run.requeued)


def _micro_batch(batch_size: int, largest: int = 32) -> int:
    """The largest micro-batch of at most ``largest`` sequences that divides ``batch_size`` (48 → 24 × 2)."""
    return next(size for size in range(min(batch_size, largest), 0, -1) if batch_size % size == 0)


def _stage(number: int, title: str) -> None:
    print(f"\n== {number}. {title} ==", flush=True)


def run_quickstart(config: QuickstartConfig, show_progress: bool = True) -> dict[str, str]:
    """Run every stage, print a summary of each, and return where the results are (the whole output locked
    meanwhile, and each stage's output by its stage)."""
    with output_lock(config.output):
        return _run_stages(config, show_progress)


def _run_stages(config: QuickstartConfig, show_progress: bool) -> dict[str, str]:
    output = Path(config.output)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    modernbert = config.architecture == "modernbert"
    size = f"modernbert-{config.model_size}" if modernbert and not config.model_size.startswith("modernbert-") \
        else config.model_size
    if size not in MODEL_SIZES:
        raise BertpreError(f"model_size: unknown size {size!r} (use one of {', '.join(MODEL_SIZES)})")

    def timed(name: str, since: float) -> None:
        timings[name] = time.perf_counter() - since

    _stage(1, "tokenizer: WordPiece from scratch")
    t = time.perf_counter()
    tokenizer = train_tokenizer(TokenizerConfig(inputs=list(config.inputs), output=str(output / "tokenizer"),
                                                vocab_size=config.vocab_size, overwrite=config.overwrite),
                                show_progress=show_progress)
    print(tokenizer.table())
    timed("tokenizer", t)

    _stage(2, "prepare: next-sentence pairs")
    t = time.perf_counter()
    data = prepare_pretraining_data(PrepareConfig(inputs=list(config.inputs), tokenizer=tokenizer.output,
                                                  output=str(output / "data"), max_seq_length=config.max_seq_length,
                                                  eval_fraction=0.05, dupe_factor=QUICKSTART_DUPE_FACTOR,
                                                  # masked-LM only: B always continues A (contiguous text)
                                                  random_next_prob=0.0 if modernbert else 0.5,
                                                  overwrite=config.overwrite),
                                    show_progress=show_progress)
    print(data.table())
    timed("prepare", t)

    _stage(3, f"pretrain: ModernBERT-{size[11:]}, masked-LM" if modernbert else
           f"pretrain: BERT-{size}, masked-LM + next-sentence")
    t = time.perf_counter()
    model = ModelConfig.of_size(size, vocab_size=tokenizer.vocab_size)
    run = pretrain(config_from_dict(PretrainConfig, dict(
        data=data.output, output=str(output / "pretrain"), model=vars(model), global_batch_size=config.batch_size,
        per_device_batch_size=_micro_batch(config.batch_size), learning_rate=config.learning_rate,
        warmup_steps=max(1, config.pretrain_steps // 10), max_steps=config.pretrain_steps,
        eval_every=max(1, config.pretrain_steps // 4), checkpoint_every=max(1, config.pretrain_steps // 2),
        log_every=10, num_workers=1, resume="never", overwrite=True,
        # word vectors of the corpus to start from: held-out NSP 0.61 instead of 0.47 after 400 steps;
        # the unigram bias and 30% masking: held-out MLM 0.138 instead of 0.126 (batch 16, 800 steps)
        embedding_init="cooccurrence", mlm_bias_init="unigram", mlm_probability=0.3,
        objective="mlm" if modernbert else "mlm_nsp")), show_progress=show_progress)
    print(run.table())
    timed("pretrain", t)
    if run.stop_signal:
        raise PretrainingStopped(run)

    _stage(4, "export: Hugging Face format")
    t = time.perf_counter()
    exported = export_checkpoint(ExportConfig(checkpoint=run.output, output=str(output / "model"),
                                              overwrite=config.overwrite))
    print(f"exported to {exported}")
    timed("export", t)

    _stage(5, "finetune: a classifier on a task derived from the corpus")
    t = time.perf_counter()
    builtin = list(config.inputs) == [BUILTIN_PYTHON_DOCS]
    task_dir, labels = _derive_classification_task(config, output / ("python-packages" if builtin else "source-files"))
    print(f"task: which {'package' if builtin else 'file'} a paragraph comes from "
          f"({', '.join(labels)})")
    classifier = finetune(FinetuneConfig(
        model=str(exported), train_file=str(task_dir / "train.jsonl"), eval_file=str(task_dir / "dev.jsonl"),
        text_column="text", label_column="label", epochs=config.finetune_epochs, learning_rate=1e-3,
        per_device_batch_size=32, output=str(output / "classifier"), overwrite=True), show_progress=show_progress)
    print(classifier.table())
    timed("finetune", t)

    _stage(6, "predict")
    t = time.perf_counter()
    metrics = predict(PredictConfig(model=classifier.output, input=str(task_dir / "dev.jsonl"),
                                    output=str(output / "classifier" / "predictions.jsonl"), text_column="text",
                                    label_column="label", overwrite=True))
    print(f"predictions  {metrics['output']} ({metrics['rows']} rows, accuracy {metrics['accuracy']:.3f}, "
          f"chance {1 / len(labels):.3f})")
    timed("predict", t)

    _stage(7, "fill-mask with vanilla transformers.pipeline")
    examples = fill_mask_examples(str(exported))
    for prompt, words in examples.items():
        print(f"{prompt}\n    → {', '.join(words)}")

    report = write_report(run.output, title="bertpre quickstart: pretraining",
                          extra={f"time: {k}": f"{v:.0f} s" for k, v in timings.items()})
    results = {"tokenizer": tokenizer.output, "data": data.output, "pretraining run": run.output,
               "model": str(exported), "classifier": classifier.output,
               "predictions": metrics["output"], "plots": str(Path(run.output) / "training.png"),
               "report": str(report), "tensorboard": f"tensorboard --logdir {output}"}
    print(f"\n== done in {time.perf_counter() - started:.0f} s ==")
    print("\n".join(f"{k:<16} {v:.0f} s" for k, v in timings.items()))
    print()
    for stage, path in results.items():
        print(f"{stage:<16} {path}")
    print(f"\nLoad it anywhere:  python -c \"from transformers import pipeline; "
          f"print(pipeline('fill-mask', model='{exported}')('the [MASK] module.'))\"")
    return results


def fill_mask_examples(model_dir: str, prompts: Optional[list[str]] = None, top_k: int = 5) -> dict[str, list[str]]:
    """Top predictions of vanilla ``transformers.pipeline("fill-mask")`` for a few prompts."""
    from transformers import logging as transformers_logging
    from transformers import pipeline

    # A masked-LM loaded from a pretraining checkpoint leaves the NSP head and pooler unused, as
    # with Google's BERT checkpoints; transformers reports that at length, which is noise here.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        fill = pipeline("fill-mask", model=model_dir, top_k=top_k)
    finally:
        transformers_logging.set_verbosity(verbosity)
    return {prompt: [p["token_str"] for p in fill(prompt)] for prompt in (prompts or FILL_MASK_PROMPTS)}


def _derive_classification_task(config: QuickstartConfig, directory: Path) -> tuple[Path, list[str]]:
    """Paragraphs labelled with their package (built-in corpus) or source file; split by document."""
    builtin = list(config.inputs) == [BUILTIN_PYTHON_DOCS]
    rows: list[dict[str, Any]] = []
    for document in read_documents(CorpusConfig(inputs=list(config.inputs))):
        label = _package_of(document.id) if builtin else document.id.split("#")[0].split(":")[0]
        if label is None:
            continue
        for paragraph in document.paragraphs:
            if len(paragraph.split()) >= 6:
                rows.append({"text": paragraph, "label": label, "document": document.id})
    counts = collections.Counter(row["label"] for row in rows)
    labels = sorted(label for label, _ in counts.most_common(config.num_classes))
    if len(labels) < 2:
        raise BertpreError(f"{', '.join(config.inputs)}: the classifier task needs paragraphs from at least two "
                           "files; give several input files")
    rows = [row for row in rows if row["label"] in labels]
    directory.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "dev": []}
    for row in rows:  # split by document so dev paragraphs come from modules never seen in training
        digest = hashlib.blake2b(row["document"].encode(), digest_size=2).digest()
        splits["dev" if int.from_bytes(digest, "little") % 5 == 0 else "train"].append(row)
    for split, items in splits.items():
        with open(directory / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for row in items:
                handle.write(json.dumps({"text": row["text"], "label": row["label"]}) + "\n")
    return directory, labels


def _package_of(document_id: str) -> Optional[str]:
    module = document_id.rsplit(":", 1)[-1]
    return module.split(".")[0] if "." in module else None

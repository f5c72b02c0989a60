"""Inputs from strangers and careless hands: checkpoints, model and tokenizer directories and datasets never run
code; odd numbers, odd encodings and odd tables are one line each."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from bertpre.cli import main
from bertpre.training.checkpoint import list_checkpoints, write_manifest

from .conftest import FAULT_RUN, REPO, english_articles
from .test_faults import refused


class _RunsCode:
    """A pickle that runs a shell command when it is loaded (what a booby-trapped checkpoint holds)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("name", ["rng-rank0.pt", "optimizer.pt", "scheduler.pt"])
def test_a_checkpoint_that_would_run_code_is_refused_unread(tiny_run: Path, wiki64_with_eval: Path, tmp_path: Path,
                                                             name: str, capsys: pytest.CaptureFixture) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    checkpoint = list_checkpoints(run)[-1]
    marker = tmp_path / "it-ran"
    torch.save({"state": _RunsCode(marker)}, checkpoint / name)
    write_manifest(checkpoint)  # a stranger's checkpoint: its manifest agrees with its files
    refused(capsys, "pretrain", "--data", str(wiki64_with_eval), "--output", str(run), "--max-steps", "6", *FAULT_RUN,
            match=f"{checkpoint / name}: holds Python objects (posix.system")
    assert not marker.exists()


def test_a_checkpoint_written_before_rng_states_were_tensors_still_resumes(tiny_run: Path, wiki64_with_eval: Path,
                                                                           tmp_path: Path) -> None:
    """Older checkpoints pickled numpy's state array; plain numpy arrays are allowed, nothing else."""
    import random

    import numpy as np

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    checkpoint = list_checkpoints(run)[-1]
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
               checkpoint / "rng-rank0.pt")
    write_manifest(checkpoint)
    assert main(["pretrain", "--data", str(wiki64_with_eval), "--output", str(run), "--max-steps", "6", *FAULT_RUN]) == 0
    assert list_checkpoints(run)[-1].name == "step-00000006"


def test_directories_that_ask_to_run_their_own_code_are_refused(tiny_run: Path, wiki64_with_eval: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "it-ran"
    model = tmp_path / "model"
    assert main(["export", "--checkpoint", str(tiny_run), "--output", str(model)]) == 0
    (model / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i}.", "label": i % 2}) + "\n" for i in range(8)))
    refused(capsys, "finetune", "--model", str(model), "--train-file", str(rows), "--eval-file", str(rows),
            "--output", str(tmp_path / "ft"), match="config.json: asks to run Python code shipped with it (auto_map")
    tokenizer = Path(shutil.copytree(REPO / "tokenizer", tmp_path / "tokenizer"))
    settings = json.loads((tokenizer / "tokenizer_config.json").read_text())
    settings["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (tokenizer / "tokenizer_config.json").write_text(json.dumps(settings))
    (tokenizer / "tokenization_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    refused(capsys, "prepare", "--inputs", str(english_articles()), "--tokenizer", str(tokenizer), "--output",
            str(tmp_path / "data"), match="tokenizer_config.json: asks to run Python code")
    data = Path(shutil.copytree(wiki64_with_eval, tmp_path / "their-data"))
    shutil.copy(tokenizer / "tokenizer_config.json", data / "tokenizer" / "tokenizer_config.json")
    refused(capsys, "pretrain", "--data", str(data), "--output", str(tmp_path / "run"), "--max-steps", "1", *FAULT_RUN,
            match="asks to run Python code")
    assert not marker.exists()


# ---- odd numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-5", "99999999999999999999"])
def test_a_seed_numpy_or_torch_cannot_take_is_one_line_before_anything_runs(seed: str, wiki64_with_eval: Path,
                                                                           tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    refused(capsys, "pretrain", "--data", str(wiki64_with_eval), "--output", str(tmp_path / "run"), "--max-steps", "1",
            *FAULT_RUN, "--seed", seed, match="seed: " + seed + " is outside 0 … 2^63 − 1")
    refused(capsys, "prepare", "--inputs", str(english_articles()), "--output", str(tmp_path / "data"), "--seed", seed,
            match="is outside 0 … 2^63 − 1")
    refused(capsys, "finetune", "--model", "m", "--seeds", "1", seed, match="is outside 0 … 2^63 − 1")
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


# ---- odd encodings and odd tables -----------------------------------------------------------------


@pytest.mark.parametrize("encoding, name", [("utf-16", "UTF-16"), ("utf-32", "UTF-32")])
def test_utf16_and_utf32_files_are_named_with_the_command_that_converts_them(
        tmp_path: Path, encoding: str, name: str, capsys: pytest.CaptureFixture) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("A sentence in another encoding.\nAnother one.\n", encoding=encoding)
    refused(capsys, "tokenizer", "train", "--inputs", str(text), "--vocab-size", "300", "--output", str(tmp_path / "t"),
            match=f"{text}: {name} text (it starts with a {name} byte-order mark)")
    table = tmp_path / "rows.tsv"
    table.write_text("sentence\tlabel\nfine\t1\n", encoding=encoding)
    refused(capsys, "finetune", "--model", str(tmp_path / "no-model"), "--train-file", str(table), "--eval-file",
            str(table), "--output", str(tmp_path / "ft"), match=f"iconv -f {name} -t UTF-8")


def test_odd_tables_are_read_right_or_refused_in_one_line(tmp_path: Path) -> None:
    from bertpre.core.errors import BertpreError
    from bertpre.readers.tables import read_table

    twice = tmp_path / "twice.csv"
    twice.write_text("text,label,text\nfirst,1,second\n")
    with pytest.raises(BertpreError, match="the column 'text' is named twice in the header"):
        read_table(str(twice))
    mac = tmp_path / "mac.csv"  # lone CR line endings, a quoted field with a newline inside, a BOM
    mac.write_bytes('\ufefftext,label\r"two\nlines",1\rplain,0\r'.encode("utf-8"))
    assert read_table(str(mac)) == [{"text": "two\nlines", "label": "1"}, {"text": "plain", "label": "0"}]
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("text\tlabel\nfine\t1\nno label\n")
    with pytest.raises(BertpreError, match="line 3 has 1 fields, the header has 2"):
        read_table(str(ragged))

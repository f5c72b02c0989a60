"""What a careless or unlucky user can do to `finetune`, `predict` and `glue`: every row checked, outputs
never clobbered, options that contradict each other refused, a diverged run named: one line, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bertpre.cli import main
from bertpre.core.metrics_log import read_metrics

from .test_faults import refused
from .tiny_glue import write_tiny_glue, write_tiny_model

FAST = ["--epochs", "1", "--per-device-batch-size", "8", "--cpu", "true", "--report-to", "none"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": f"the film was {'good' if i % 2 else 'bad'} ({i}).", "label": i % 2})
                            + "\n" for i in range(24)))
    return path


@pytest.fixture(scope="module")
def classifier(tiny: Path, rows: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("classifier") / "ft"
    assert main(["finetune", "--model", str(tiny), "--train-file", str(rows), "--eval-file", str(rows),
                 "--output", str(output), *FAST]) == 0
    return output / "model"


def finetune_refused(capsys: pytest.CaptureFixture, tiny: Path, train: Path, output: Path, *extra: str,
                     match: str) -> None:
    refused(capsys, "finetune", "--model", str(tiny), "--train-file", str(train), "--eval-file", str(train),
            "--output", str(output), *FAST, *extra, match=match)
    assert not output.exists()


# ---- every row of a table is read and checked ------------------------------------------------------


@pytest.mark.parametrize("bad_row,match", [
    ({"text": "no label here."}, "line 5 has no column 'label'"),
    ({"text": "a null label.", "label": None}, "line 5 has no label in column 'label'"),
    ({"text": ["a", "list"], "label": 1}, "line 5: column 'text' holds a list"),
    ({"text": "a dict label.", "label": {"value": 1}}, "line 5: column 'label' holds a dict"),
])
def test_every_jsonl_row_is_checked_not_only_the_first(bad_row: dict, match: str, tiny: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "train.jsonl"
    good = [{"text": f"row {i} is fine.", "label": i % 2} for i in range(8)]
    table.write_text("".join(json.dumps(row) + "\n" for row in good[:4] + [bad_row] + good[4:]))
    finetune_refused(capsys, tiny, table, tmp_path / "ft", match=f"{table}: {match}")


def test_an_empty_label_cell_of_a_csv_is_refused_not_a_class(tiny: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "train.csv"
    table.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(6)) + "row 6,\nrow 7,1\n")
    finetune_refused(capsys, tiny, table, tmp_path / "ft", match=f"{table}: line 8 has no label in column 'label'")


def test_a_non_finite_regression_label_is_refused(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "scores.tsv"
    table.write_text("text\tlabel\n" + "".join(f"row {i}\t{i / 4}\n" for i in range(6)) + "row 6\tnan\n")
    finetune_refused(capsys, tiny, table, tmp_path / "ft", "--problem", "regression",
                     match="line 8 column 'label' is 'nan'; a regression label must be a finite number")


def test_invalid_utf8_is_named_by_its_line_and_byte_in_the_file(tiny: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "train.tsv"
    lines = ["text\tlabel"] + [f"the review number {i} is quite long on purpose\t{i % 2}" for i in range(3000)]
    body = ("\n".join(lines) + "\n").encode()
    bad_line = len(lines) + 1  # the Latin-1 line comes after all of them, far beyond the first 8 KiB read
    table.write_bytes(body + "caf\xe9 cr\xe8me\t1\n".encode("latin-1"))
    finetune_refused(capsys, tiny, table, tmp_path / "ft",
                     match=f"not valid UTF-8 at line {bad_line} (byte {len(body) + 3})")


# ---- options that contradict each other or the model ------------------------------------------------


@pytest.mark.parametrize("options,match", [
    (["--task", "sst2", "--problem", "regression"], "problem: sst2 is a classification task"),
    (["--task", "stsb", "--problem", "classification"], "problem: stsb is a regression task"),
    (["--problem", "regression", "--metrics", "accuracy"], "metrics: accuracy does not apply to a regression task"),
    (["--metrics", "pearson"], "for numeric scores pass --problem regression"),
    (["--max-train-samples", "0"], "max_train_samples: must be at least 1"),
])
def test_contradicting_finetune_options_are_refused(options: list[str], match: str, tiny: Path, rows: Path,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    finetune_refused(capsys, tiny, rows, tmp_path / "ft", *options, match=match)


def test_a_model_without_tokenizer_files_is_refused_before_training(tiny: Path, rows: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny / name, bare / name)
    finetune_refused(capsys, bare, rows, tmp_path / "ft", match="model directory without tokenizer files")


def test_inputs_longer_than_the_positions_are_cut_to_them(tiny: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "long.jsonl"  # 150 words: longer than the tiny model's 64 positions
    table.write_text("".join(json.dumps({"text": " ".join(["good"] * 150), "label": i % 2}) + "\n" for i in range(8)))
    assert main(["finetune", "--model", str(tiny), "--train-file", str(table), "--eval-file", str(table),
                 "--output", str(tmp_path / "ft"), "--max-seq-length", "256", *FAST]) == 0
    assert "max_seq_length: 256 is longer than the 64 positions" in capsys.readouterr().out
    assert "max_seq_length: 64" in (tmp_path / "ft" / "finetune.yaml").read_text()


def test_a_diverging_run_is_named_not_a_traceback(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "scores.jsonl"
    table.write_text("".join(json.dumps({"text": f"row {i} scores.", "label": i / 3}) + "\n" for i in range(16)))
    refused(capsys, "finetune", "--model", str(tiny), "--train-file", str(table), "--eval-file", str(table),
            "--output", str(tmp_path / "ft"), "--problem", "regression", "--learning-rate", "1e30",
            "--warmup-fraction", "0", *FAST, match="lower --learning-rate")
    assert not (tmp_path / "ft" / "model").exists()


def test_overwrite_replaces_the_earlier_run_instead_of_appending_to_it(tiny: Path, rows: Path, tmp_path: Path) -> None:
    output = tmp_path / "ft"
    for _ in range(2):
        assert main(["finetune", "--model", str(tiny), "--train-file", str(rows), "--eval-file", str(rows),
                     "--output", str(output), "--overwrite", "true", *FAST]) == 0
    assert [record["epoch"] for record in read_metrics(output / "metrics.jsonl")] == [1]


# ---- predict never clobbers -------------------------------------------------------------------------


def test_predict_refuses_to_replace_its_input_a_directory_or_an_existing_file(
        classifier: Path, rows: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = Path(shutil.copy(rows, tmp_path / "rows.jsonl"))
    before = table.read_text()
    predict = ["predict", "--model", str(classifier), "--input", str(table), "--cpu", "true"]
    refused(capsys, *predict, "--output", str(table), match=f"{table}: is the --input file")
    refused(capsys, *predict, "--output", str(tmp_path), match=f"{tmp_path}: is a directory")
    existing = tmp_path / "old.jsonl"
    existing.write_text("keep me\n")
    refused(capsys, *predict, "--output", str(existing), match="exists; choose another --output or pass --overwrite")
    refused(capsys, *predict, "--output", str(existing), "--overwrite", "true",  # not a file predict wrote
            match="exists and is not a file of predictions")
    assert table.read_text() == before and existing.read_text() == "keep me\n"
    earlier = tmp_path / "earlier.jsonl"
    assert main([*predict, "--output", str(earlier)]) == 0
    assert main([*predict, "--output", str(earlier), "--overwrite", "true"]) == 0  # its own earlier output
    assert len(earlier.read_text().splitlines()) == len(before.splitlines())
    refused(capsys, *predict, "--output", str(tmp_path / "p.jsonl"), "--batch-size", "0", match="batch_size: must be")


def test_an_output_below_a_file_is_one_line(classifier: Path, rows: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder\n")
    refused(capsys, "predict", "--model", str(classifier), "--input", str(rows), "--output",
            str(blocker / "sub" / "p.jsonl"), match=f"{blocker}: is a file, not a directory")


# ---- glue reads every task before the first trains -----------------------------------------------------


def test_glue_refuses_a_broken_later_task_before_the_first_trains(tiny: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    data = write_tiny_glue(tmp_path / "glue")
    dev = data / "CoLA" / "dev.tsv"
    dev.write_text(dev.read_text() + "src\t1\n")  # a row cut short
    refused(capsys, "glue", "--model", str(tiny), "--data-dir", str(data), "--tasks", "sst2", "cola",
            "--output", str(tmp_path / "out"), *FAST, match=f"{dev}: line 25 has 2 fields")
    assert not (tmp_path / "out" / "sst2").exists()

"""What a careless or unlucky user can do to every command: one clear line, exit 2, nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertpre.training.checkpoint import list_checkpoints
from bertpre.tokenizer.files import directory_vocabulary_digest
from bertpre.cli import main

from .conftest import REPO, english_articles, prepare_wiki64

TINY = str(REPO / "configs" / "model" / "tiny.yaml")
TRAIN = ["--model", TINY, "--global-batch-size", "8", "--per-device-batch-size", "8", "--warmup-steps", "1",
         "--learning-rate", "1e-3", "--log-every", "1", "--eval-every", "0", "--eval-batches", "2",
         "--checkpoint-every", "3", "--num-workers", "0", "--cpu", "true"]


def refused(capsys: pytest.CaptureFixture, *argv: str, match: str) -> str:
    """Run the CLI in-process; it must exit 2 with one line (no traceback) that contains ``match``."""
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert match in err, err
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_wiki64(tmp_path_factory.mktemp("faults") / "data", eval_fraction=0.2)


@pytest.fixture(scope="module")
def run6(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("faults") / "run6"
    assert main(["pretrain", "--data", str(data), "--output", str(output), "--max-steps", "6", *TRAIN]) == 0
    return output


@pytest.fixture(scope="module")
def exported(run6: Path) -> Path:
    output = run6.parent / "hf"
    assert main(["export", "--checkpoint", str(run6), "--output", str(output)]) == 0
    return output


def copy_run(run: Path, destination: Path) -> Path:
    shutil.copytree(run, destination)
    return destination


# ---- resume survives any kill -----------------------------------------------------------------


def test_a_cut_off_last_metrics_line_does_not_block_resume_or_status(run6: Path, data: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    run = copy_run(run6, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 7, "tokens_seen": 12')  # a kill landed mid-append
    with pytest.warns(UserWarning, match="dropped a cut-off last line"):
        assert main(["status", str(run)]) == 0
    assert main(["pretrain", "--data", str(data), "--output", str(run), "--max-steps", "8", *TRAIN]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "mlm_loss" in m] == list(range(1, 9))


def test_a_damaged_middle_line_of_metrics_is_named(run6: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = copy_run(run6, tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][:20]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    refused(capsys, "status", str(run), match="metrics.jsonl: line 3 is not a JSON object")


def test_a_damaged_checkpoint_is_skipped_for_the_newest_intact_one_and_named(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uninterrupted = tmp_path / "uninterrupted"
    assert main(["pretrain", "--data", str(data), "--output", str(uninterrupted), "--max-steps", "9", *TRAIN]) == 0
    run = copy_run(uninterrupted, tmp_path / "run")
    weights = list_checkpoints(run)[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a full disk or a crashed copy cut it short
    refused(capsys, "export", "--checkpoint", str(run), "--output", str(tmp_path / "hf"), match=f"{weights}: 1,000 bytes")
    assert not (tmp_path / "hf").exists()
    with pytest.warns(UserWarning, match=f"skipping damaged checkpoint: {weights}"):
        assert main(["pretrain", "--data", str(data), "--output", str(run), "--max-steps", "9", *TRAIN]) == 0
    said = capsys.readouterr().out
    assert "resumed from" in said and "step-00000006" in said
    from safetensors.torch import load_file

    expected = load_file(str(list_checkpoints(uninterrupted)[-1] / "model.safetensors"))
    got = load_file(str(list_checkpoints(run)[-1] / "model.safetensors"))
    assert all(torch.equal(expected[k], got[k]) for k in expected)  # resumed from step 6: the same run


def test_damaged_prepared_data_is_named_before_an_earlier_run_is_cleared(
        data: Path, run6: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = copy_run(run6, tmp_path / "run")
    checkpoints = list_checkpoints(run)
    start_over = ["pretrain", "--output", str(run), "--max-steps", "2", "--resume", "never", "--overwrite", "true", *TRAIN]

    cut = Path(shutil.copytree(data, tmp_path / "cut"))
    shard = cut / "train" / "data-00000-of-00001.arrow"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # an interrupted copy
    refused(capsys, *start_over, "--data", str(cut), match=f"{shard}: damaged or cut short")

    lost = Path(shutil.copytree(data, tmp_path / "lost"))
    (lost / "train" / "data-00000-of-00001.arrow").rename(lost / "train" / "data-00000-of-00002.arrow")
    refused(capsys, *start_over, "--data", str(lost), match="data-00001-of-00002.arrow is missing (1 of 2 files)")

    mixed = Path(shutil.copytree(data, tmp_path / "mixed"))
    shutil.copy(data / "eval" / "data-00000-of-00001.arrow", mixed / "train" / "data-00000-of-00001.arrow")
    refused(capsys, *start_over, "--data", str(mixed), match="pairs where `bertpre prepare` wrote")

    held_out = Path(shutil.copytree(data, tmp_path / "held-out"))
    (held_out / "eval" / "data-00000-of-00001.arrow").write_bytes(b"\x00" * 64)  # never skipped as "no eval data"
    refused(capsys, *start_over, "--data", str(held_out), match="eval/data-00000-of-00001.arrow: damaged or cut short")
    assert list_checkpoints(run) == checkpoints  # nothing of the earlier run was cleared


def test_damaged_model_files_are_named_by_finetune_and_export(exported: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"example {i} is fine.", "label": i % 2}) + "\n" for i in range(20)))
    model = Path(shutil.copytree(exported, tmp_path / "model"))
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:5000])
    refused(capsys, "finetune", "--model", str(model), "--train-file", str(rows), "--eval-file", str(rows),
            "--output", str(tmp_path / "ft"), match=f"{model / 'model.safetensors'}: unreadable weights")
    (model / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    refused(capsys, "finetune", "--model", str(model), "--train-file", str(rows), "--eval-file", str(rows),
            "--output", str(tmp_path / "ft"), match=f"{model / 'config.json'}: not valid JSON at line 1")
    assert not (tmp_path / "ft").exists()


# ---- numbers, permissions, contents --------------------------------------------------------------


@pytest.mark.parametrize("option,value", [("--learning-rate", "nan"), ("--learning-rate", "inf"),
                                          ("--learning-rate", "-1e-3"), ("--adam-epsilon", "0"),
                                          ("--model.hidden-dropout-prob", "nan"), ("--max-minutes", "-5"),
                                          ("--adam-beta2", "1.5"), ("--weight-decay", "-0.1")])
def test_numbers_that_must_be_finite_and_positive_are_checked(option: str, value: str, data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    key = option[2:].split(".")[-1].replace("-", "_")
    refused(capsys, "pretrain", "--data", str(data), "--output", str(tmp_path / "run"), "--max-steps", "2",
            *TRAIN, f"{option}={value}", match=key)
    assert not (tmp_path / "run").exists()


def test_finetune_numbers_are_checked(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    refused(capsys, "finetune", "--model", str(exported), "--learning-rate", "inf", match="learning_rate: must be a finite")


def test_outputs_honour_the_umask(exported: Path, run6: Path, data: Path, tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        assert main(["tokenizer", "train", "--inputs", str(english_articles()), "--vocab-size", "400",
                     "--output", str(tmp_path / "tok")]) == 0
        assert main(["prepare", "--inputs", str(english_articles()), "--tokenizer", str(REPO / "tokenizer"),
                     "--output", str(tmp_path / "data"), "--num-workers", "1", "--max-seq-length", "32"]) == 0
        assert main(["export", "--checkpoint", str(run6), "--output", str(tmp_path / "hf")]) == 0
    finally:
        os.umask(previous)
    for directory in ("tok", "data", "hf"):
        assert (tmp_path / directory).stat().st_mode & 0o777 == 0o755, directory
        for file in (tmp_path / directory).rglob("*"):
            assert file.stat().st_mode & 0o044 == 0o044, file  # group and others can read


def test_an_unwritable_output_parent_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "locked"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self == locked / "sub":  # what a directory owned by someone else answers
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    refused(capsys, "tokenizer", "train", "--inputs", str(english_articles()), "--vocab-size", "300",
            "--output", str(locked / "sub" / "tok"), match=f"{locked / 'sub'}: permission denied")


def test_an_unwritable_output_parent_as_an_ordinary_user(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    tmp_path.chmod(0o755)
    as_nobody = (lambda: os.setuid(65534)) if os.geteuid() == 0 else None  # root writes anywhere
    try:
        result = subprocess.run([sys.executable, "-m", "bertpre", "tokenizer", "train", "--inputs",
                                 str(english_articles()), "--vocab-size", "300", "--output", str(locked / "tok")],
                                capture_output=True, text=True, preexec_fn=as_nobody, timeout=300,
                                env={**os.environ, "HOME": str(tmp_path)})
    except PermissionError as error:
        pytest.skip(f"an ordinary user cannot run this interpreter here ({error})")
    finally:
        locked.chmod(0o755)
    if result.returncode != 2 and ("Permission denied" in result.stderr and "bertpre" not in result.stderr):
        pytest.skip(f"an ordinary user cannot run this interpreter here: {result.stderr[-200:]}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "permission denied" in result.stderr.lower()
    assert str(locked) in result.stderr


def test_a_file_whose_content_does_not_match_its_extension(exported: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    fake = tmp_path / "train.parquet"
    fake.write_text("sentence\tlabel\nfine\t1\n")
    refused(capsys, "finetune", "--model", str(exported), "--train-file", str(fake), "--eval-file", str(fake),
            "--output", str(tmp_path / "ft"), match=f"{fake}: not a readable Parquet file")
    broken = tmp_path / "train.tsv.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    refused(capsys, "finetune", "--model", str(exported), "--train-file", str(broken), "--eval-file", str(broken),
            "--output", str(tmp_path / "ft"), match=f"{broken}: not a readable gzip file")
    assert not (tmp_path / "ft").exists()


def test_predict_checks_labels_before_writing_anything(exported: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"a short text {i}.", "label": i % 2}) + "\n" for i in range(40)))
    assert main(["finetune", "--model", str(exported), "--train-file", str(rows), "--eval-file", str(rows),
                 "--epochs", "1", "--output", str(tmp_path / "ft"), "--cpu", "true"]) == 0
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("".join(json.dumps({"text": "what is this?", "label": "maybe"}) + "\n" for _ in range(3)))
    out = tmp_path / "predictions.jsonl"
    refused(capsys, "predict", "--model", str(tmp_path / "ft" / "model"), "--input", str(wrong), "--label-column",
            "label", "--output", str(out), match="labels ['maybe'] are not among")
    assert not out.exists()


# ---- a sample of everything else a user can get wrong -------------------------------------------


def test_bad_inputs_across_commands_are_one_line_and_leave_nothing(data: Path, run6: Path, exported: Path,
                                                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    model_only = tmp_path / "model-only"
    model_only.mkdir()
    shutil.copy(exported / "config.json", model_only / "config.json")
    shutil.copy(exported / "model.safetensors", model_only / "model.safetensors")
    damaged_data = Path(shutil.copytree(data, tmp_path / "damaged-data"))
    (damaged_data / "prepare.json").write_text('{"format_version": 1, "max_seq')
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i} says a thing.", "label": i % 2}) + "\n" for i in range(8)))
    cases = [
        (["tokenizer", "train", "--inputs", str(tmp_path / "missing.txt"), "--output", str(out)], "no such file"),
        (["tokenizer", "train", "--inputs", str(binary), "--output", str(out)], "binary file"),
        (["tokenizer", "train", "--inputs", str(english_articles()), "--vocab-size", "0", "--output", str(out)], "vocab_size"),
        (["prepare", "--inputs", str(english_articles()), "--tokenizer", str(model_only), "--output", str(out)],
         "model directory without tokenizer files"),
        (["prepare", "--inputs", str(english_articles()), "--tokenizer", str(tmp_path / "nope"), "--output", str(out)],
         "tokenizer directory not found"),
        (["prepare", "--inputs", str(english_articles()), "--short-seq-prob", "2", "--output", str(out)], "short_seq_prob"),
        (["pretrain", "--data", str(tmp_path / "nothing"), "--output", str(out), "--max-steps", "1"], "not a prepared dataset"),
        (["pretrain", "--data", str(damaged_data), "--output", str(out), "--max-steps", "1"], "prepare.json: damaged"),
        (["pretrain", "--data", str(data), "--output", str(out), "--max-steps", "1", "--model.vocab-size", "999"],
         "model.vocab_size: 999 differs"),
        (["export", "--checkpoint", str(tmp_path / "norun"), "--output", str(out)], "no complete checkpoint"),
        (["export", "--checkpoint", str(run6), "--step", "4", "--output", str(out)], "no checkpoint at step 4"),
        (["finetune", "--model", str(tmp_path / "nomodel"), "--train-file", str(rows), "--eval-file", str(rows),
          "--output", str(out)], "no config.json"),
        (["predict", "--model", str(exported), "--input", str(binary), "--output", str(out / "p.jsonl")], "not a classifier"),
        (["status", str(tmp_path / "norun")], "no such run directory"),
        (["bench", "--model-size", "huge"], "model_size"),
        (["bench", "--curve-steps", "5"], "give --data"),
    ]
    for argv, match in cases:
        refused(capsys, *argv, match=match)
        assert not out.exists(), argv


def test_damaged_inputs_of_every_kind_are_one_line(exported: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    import gzip

    damaged = tmp_path / "corpus.txt.gz"
    packed = bytearray(gzip.compress(english_articles().read_bytes() * 3))
    middle = len(packed) // 2
    packed[middle:middle + 64] = b"\xff" * 64  # a bad block in the middle: zlib's own error, not an OSError
    damaged.write_bytes(bytes(packed))
    out = tmp_path / "out"
    refused(capsys, "tokenizer", "train", "--inputs", str(damaged), "--vocab-size", "300", "--output", str(out),
            match=f"{damaged}: not a valid gzip file")
    rows = tmp_path / "rows.jsonl.gz"
    rows.write_bytes(bytes(packed))
    refused(capsys, "finetune", "--model", str(exported), "--train-file", str(rows), "--eval-file", str(rows),
            "--output", str(out), match=f"{rows}: not a readable gzip file")
    zipped_parquet = tmp_path / "corpus.parquet.gz"
    zipped_parquet.write_bytes(gzip.compress(b"PAR1 not really"))
    refused(capsys, "prepare", "--inputs", str(zipped_parquet), "--output", str(out),
            match="a gzipped Parquet file; Parquet compresses its own columns")
    partial = tmp_path / "saved"
    partial.mkdir()
    (partial / "state.json").write_text('{"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}')
    refused(capsys, "prepare", "--inputs", str(partial), "--output", str(out), match=f"{partial}: not a complete saved dataset")
    assert not out.exists()


def test_a_line_too_long_to_read_is_refused_before_it_is_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    import bertpre.readers.lines as lines

    monkeypatch.setattr(lines, "MAX_LINE_BYTES", 4096)  # 256 MiB in earnest
    one_line = tmp_path / "export.json"  # a JSON array of every record on one line
    one_line.write_text(json.dumps([{"text": f"record {i} of the corpus."} for i in range(400)]))
    refused(capsys, "tokenizer", "train", "--inputs", str(one_line), "--vocab-size", "300", "--output",
            str(tmp_path / "tok"), match=f"{one_line}: line 1 is longer than 4,096 bytes; not line-oriented text or JSONL")
    fits = tmp_path / "fits.txt"
    fits.write_text(("x" * 4095 + "\n") + english_articles().read_text(encoding="utf-8"))  # 4,096 bytes with its newline
    assert main(["tokenizer", "train", "--inputs", str(fits), "--vocab-size", "300", "--output", str(tmp_path / "ok")]) == 0


def test_a_glob_through_a_symlink_loop_reads_each_file_once(tmp_path: Path) -> None:
    from bertpre.readers.corpus import resolve_inputs

    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("one.\n")
    (corpus / "sub" / "b.txt").write_text("two.\n")
    (corpus / "sub" / "up").symlink_to(corpus, target_is_directory=True)  # a link back up the tree
    found = resolve_inputs([f"{corpus}/**/*.txt", str(corpus / "a.txt")])
    assert sorted(os.path.realpath(p) for p in found) == sorted(str(p.resolve()) for p in (corpus / "a.txt",
                                                                                          corpus / "sub" / "b.txt"))


def test_resuming_with_another_model_shape_is_one_line(run6: Path, data: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    run = copy_run(run6, tmp_path / "run")
    refused(capsys, "pretrain", "--data", str(data), "--output", str(run), "--max-steps", "8", *TRAIN,
            "--model.hidden-size", "64", "--model.intermediate-size", "256",
            match="saved with another model shape (hidden_size 128 → 64, intermediate_size 512 → 256)")


def _tokenizer_with_two_tokens_swapped(destination: Path) -> Path:
    """bertpre's tokenizer with the ids of `the` and `and` exchanged: as many tokens, other meanings."""
    shutil.copytree(REPO / "tokenizer", destination)
    lines = (destination / "vocab.txt").read_text(encoding="utf-8").split("\n")
    first, second = lines.index("the"), lines.index("and")
    lines[first], lines[second] = lines[second], lines[first]
    (destination / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    spec = json.loads((destination / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    vocab["the"], vocab["and"] = vocab["and"], vocab["the"]
    (destination / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    return destination


def test_a_vocabulary_of_the_same_size_but_other_tokens_is_refused(run6: Path, data: Path, exported: Path,
                                                                   tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    swapped = _tokenizer_with_two_tokens_swapped(tmp_path / "swapped")
    refused(capsys, "export", "--checkpoint", str(run6), "--tokenizer", str(swapped), "--output", str(tmp_path / "hf"),
            match="other tokens than the vocabulary")
    other_model = Path(shutil.copytree(exported, tmp_path / "other-model"))
    for name in ("vocab.txt", "tokenizer.json"):
        shutil.copy(swapped / name, other_model / name)
    refused(capsys, "pretrain", "--data", str(data), "--output", str(tmp_path / "continued"), "--init-from",
            str(other_model), "--max-steps", "2", *TRAIN[2:], match="its vocabulary has other tokens")
    reprepared = Path(shutil.copytree(data, tmp_path / "reprepared"))  # as if prepared again with another tokenizer
    for name in ("vocab.txt", "tokenizer.json"):
        shutil.copy(swapped / name, reprepared / "tokenizer" / name)
    metadata = json.loads((reprepared / "prepare.json").read_text())
    metadata["tokenizer"]["vocab_sha256"] = directory_vocabulary_digest(swapped)
    (reprepared / "prepare.json").write_text(json.dumps(metadata))
    run = copy_run(run6, tmp_path / "run")
    refused(capsys, "pretrain", "--data", str(reprepared), "--output", str(run), "--max-steps", "8", *TRAIN,
            match="trained on data of another vocabulary")
    assert main(["export", "--checkpoint", str(run6), "--output", str(tmp_path / "same")]) == 0  # its own: fine


def test_a_checkpoint_of_another_bertpre_version_still_reads(run6: Path, tmp_path: Path) -> None:
    from bertpre.training.checkpoint import read_trainer_state

    checkpoint = Path(shutil.copytree(list_checkpoints(run6)[-1], tmp_path / "step"))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    del state["vocab_sha256"]  # saved before the fingerprint was kept
    state["a_later_counter"] = 3  # or by a later version
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    loaded = read_trainer_state(checkpoint)
    assert loaded.step == 6 and loaded.vocab_sha256 == ""


def test_the_fingerprint_of_a_tokenizer_json_counts_its_added_tokens_as_prepare_does(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from bertpre.tokenizer.files import directory_vocabulary_digest, vocabulary_digest

    extended = tmp_path / "extended"
    extended.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (REPO / "tokenizer" / name).exists():
            shutil.copy(REPO / "tokenizer" / name, extended / name)
    spec = json.loads((extended / "tokenizer.json").read_text(encoding="utf-8"))
    size = len(spec["model"]["vocab"])
    spec["added_tokens"].append({"id": size, "content": "[DOMAIN]", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    (extended / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    vocab = AutoTokenizer.from_pretrained(str(extended)).get_vocab()  # what prepare fingerprints
    assert len(vocab) == size + 1
    assert directory_vocabulary_digest(extended) == vocabulary_digest(sorted(vocab, key=vocab.__getitem__))


def test_status_of_a_run_that_has_not_logged_a_step_yet(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bertpre.core.config import save_config, load_config
    from bertpre.core.configs import PretrainConfig

    run = tmp_path / "run"
    run.mkdir()  # pretrain writes its config before its first step is logged
    save_config(load_config(PretrainConfig, overrides={"data": str(data), "max_steps": "5"}), run / "pretrain.yaml")
    assert main(["status", str(run)]) == 0
    assert "started: no step logged yet" in capsys.readouterr().out
    refused(capsys, "status", str(tmp_path), match="not a bertpre run")


def test_options_that_would_fail_later_or_mislead_are_handled_first(capsys: pytest.CaptureFixture) -> None:
    from bertpre.runners.quickstart import _micro_batch

    assert [_micro_batch(size) for size in (16, 32, 48, 64, 7, 100)] == [16, 32, 24, 32, 7, 25]
    refused(capsys, "bench", "--curve-steps", "6", "--data", "somewhere", match="curve_steps: 6 is too few")
    refused(capsys, "bench", "--seq-length", "3", "--cpu", "true", match="seq_length: 3 is too short")


def test_bench_says_when_its_synthetic_batches_are_padded() -> None:
    from bertpre.runners import bench
    from bertpre.core.configs import BenchConfig

    batches, mode = bench._batches(BenchConfig(model_size="tiny", seq_length=100, batch_size=2, cpu=True), 30522,
                                   torch.device("cpu"))
    assert batches["padded"][0]["input_ids"].shape[1] == 104 and mode.endswith("padded to 104")
    _, exact = bench._batches(BenchConfig(model_size="tiny", seq_length=64, batch_size=2, cpu=True), 30522,
                              torch.device("cpu"))
    assert exact.endswith("no padding")


def test_a_second_writer_of_one_output_never_replaces_the_first(tmp_path: Path) -> None:
    from bertpre.core.errors import BertpreError
    from bertpre.core.io import atomic_directory

    output = tmp_path / "data"
    with pytest.raises(BertpreError, match="another process wrote it while this one ran"):
        with atomic_directory(output) as staging:
            (staging / "mine.txt").write_text("mine")
            output.mkdir()
            (output / "theirs.txt").write_text("theirs")  # the other run finished first
    assert [p.name for p in output.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # our staging directory is gone


def test_a_full_disk_is_one_line_and_leaves_no_half_written_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    import errno

    import bertpre.tokenizer.train as tokenizer_module

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "tok" / "vocab.txt"))

    monkeypatch.setattr(tokenizer_module, "save_tokenizer_files", disk_full)
    refused(capsys, "tokenizer", "train", "--inputs", str(english_articles()), "--vocab-size", "300",
            "--output", str(tmp_path / "tok"), match="No space left on device (ENOSPC); the disk is full")
    assert not (tmp_path / "tok").exists() and not list(tmp_path.glob(".tok.*"))

"""Outputs never reach anything else: not the command's inputs, not through a symbolic link, `--overwrite` only
over its own kind of output; and a full disk, a quota or a file too large is one line, nothing half-written, the
previous checkpoint intact."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bertpre.cli import main
from bertpre.training.checkpoint import list_checkpoints

from .conftest import FAULT_RUN, REPO, english_articles
from .test_faults import refused

def tree(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(directory.rglob("*"))}


# ---- outputs that alias inputs ------------------------------------------------------------------


def test_no_command_writes_over_its_own_inputs(tiny_run: Path, tiny_export: Path, wiki64_with_eval: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    shutil.copy(english_articles(), corpus_dir / "articles.txt")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i} says a thing.", "label": i % 2}) + "\n" for i in range(8)))
    before = {path: tree(path) for path in (tiny_run, tiny_export, wiki64_with_eval, corpus_dir)}
    checkpoint = list_checkpoints(tiny_run)[-1]
    cases = [
        (["export", "--checkpoint", str(tiny_run), "--output", str(tiny_run), "--overwrite", "true"],
         f"{tiny_run}: is the --checkpoint {tiny_run}"),
        (["export", "--checkpoint", str(tiny_run), "--output", str(tiny_run / "hf"), "--overwrite", "true"],
         f"lies inside the --checkpoint {tiny_run}"),
        (["export", "--checkpoint", str(checkpoint), "--output", str(tiny_run.parent), "--overwrite", "true"],
         "contains the --checkpoint"),
        (["tokenizer", "train", "--inputs", str(corpus_dir / "articles.txt"), "--output", str(corpus_dir),
          "--vocab-size", "300", "--overwrite", "true"], "contains the --inputs"),
        (["prepare", "--inputs", str(corpus_dir), "--output", str(corpus_dir / "data")], "lies inside the --inputs"),
        (["prepare", "--inputs", str(english_articles()), "--tokenizer", str(tiny_export), "--output", str(tiny_export),
          "--overwrite", "true"], "is the --tokenizer"),
        (["pretrain", "--data", str(wiki64_with_eval), "--output", str(wiki64_with_eval), "--max-steps", "1", *FAULT_RUN],
         "is the --data"),
        (["pretrain", "--data", str(wiki64_with_eval), "--output", str(tiny_run), "--init-from", str(checkpoint),
          "--resume", "never", "--overwrite", "true", "--max-steps", "1", *FAULT_RUN], "contains the --init-from"),
        (["finetune", "--model", str(tiny_export), "--train-file", str(rows), "--eval-file", str(rows), "--output",
          str(tiny_export), "--overwrite", "true", "--cpu", "true"], "is the --model"),
        (["finetune", "--model", str(tiny_export), "--train-file", str(rows), "--eval-file", str(rows), "--output",
          str(tmp_path), "--overwrite", "true", "--cpu", "true"], "contains the --train-file"),
        (["predict", "--model", str(tiny_export), "--input", str(rows), "--output", str(tiny_export / "p.jsonl")],
         "lies inside the --model"),
        (["glue", "--model", str(tiny_export), "--tasks", "sst2", "--data-dir", str(tmp_path), "--output",
          str(tmp_path / "glue"), "--cpu", "true"], "lies inside the --data-dir"),
    ]
    for argv, match in cases:
        refused(capsys, *argv, match=match)
    assert {path: tree(path) for path in before} == before  # not a file of any input changed
    assert not (corpus_dir / "data").exists() and not (tmp_path / "glue").exists()


def test_outputs_never_reach_through_a_symbolic_link(tiny_run: Path, tiny_export: Path, wiki64_with_eval: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """The issue's `export --output LINK`: `OSError: Cannot call rmtree on a symbolic link`; worse, a link
    inside an output must never have its target deleted by `--overwrite`."""
    target = Path(shutil.copytree(tiny_export, tmp_path / "models" / "kept"))
    link = tmp_path / "latest"
    link.symlink_to(target, target_is_directory=True)
    refused(capsys, "export", "--checkpoint", str(tiny_run), "--output", str(link), "--overwrite", "true",
            match=f"{link}: is a symbolic link (to {target})")
    refused(capsys, "predict", "--model", str(tiny_export), "--input", str(tmp_path / "x.jsonl"), "--output", str(link),
            match="is a symbolic link")
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "thesis.txt").write_text("years of work")
    dataset = Path(shutil.copytree(wiki64_with_eval, tmp_path / "data"))
    (dataset / "notes").symlink_to(outside, target_is_directory=True)
    assert main(["prepare", "--inputs", str(english_articles()), "--output", str(dataset), "--overwrite", "true",
                 "--max-seq-length", "32", "--num-workers", "1"]) == 0
    run = Path(shutil.copytree(tiny_run, tmp_path / "run", symlinks=True))
    scratch = tmp_path / "scratch-checkpoints"
    shutil.move(run / "checkpoints", scratch)
    (run / "checkpoints").symlink_to(scratch, target_is_directory=True)  # checkpoints kept on another disk
    assert main(["pretrain", "--data", str(wiki64_with_eval), "--output", str(run), "--resume", "never",
                 "--overwrite", "true", "--max-steps", "2", *FAULT_RUN]) == 0
    assert (outside / "thesis.txt").read_text() == "years of work" and not (dataset / "notes").exists()
    assert [p.name for p in scratch.iterdir()] and list_checkpoints(run)  # the target kept its files
    assert tree(target) == tree(tiny_export)


def test_overwrite_replaces_only_its_own_kind_of_output(tiny_run: Path, tiny_export: Path, wiki64_with_eval: Path,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.tex").write_text("years of work")
    table = tmp_path / "rows.tsv"
    table.write_text("text\tlabel\nfine\t1\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i}.", "label": i % 2}) + "\n" for i in range(8)))
    other_data = Path(shutil.copytree(wiki64_with_eval, tmp_path / "other-data"))  # not the run's own data
    before = {path: tree(path) for path in (tiny_run, tiny_export, other_data, documents)}
    cases = [
        (["export", "--checkpoint", str(tiny_run), "--output", str(other_data), "--overwrite", "true"],
         "holds a prepared dataset, not a model"),
        (["export", "--checkpoint", str(tiny_run), "--output", str(documents), "--overwrite", "true"],
         "holds files that no bertpre command wrote (thesis.tex), not a model"),
        (["prepare", "--inputs", str(english_articles()), "--output", str(tiny_export), "--overwrite", "true"],
         "holds a model, not a prepared dataset"),
        (["tokenizer", "train", "--inputs", str(english_articles()), "--output", str(tiny_export), "--vocab-size", "300",
          "--overwrite", "true"], "holds a model, not a tokenizer"),
        (["pretrain", "--data", str(wiki64_with_eval), "--output", str(tiny_export), "--max-steps", "1", *FAULT_RUN],
         "holds a model, not a pretraining run"),
        (["finetune", "--model", str(tiny_export), "--train-file", str(rows), "--eval-file", str(rows), "--output",
          str(tiny_run), "--overwrite", "true", "--cpu", "true"], "holds a pretraining run, not a fine-tuning run"),
        (["predict", "--model", str(tiny_export), "--input", str(rows), "--output", str(table), "--overwrite", "true"],
         "exists and is not a file of predictions"),
    ]
    for argv, match in cases:
        refused(capsys, *argv, match=match)
    assert {path: tree(path) for path in before} == before and table.read_text().startswith("text\tlabel")
    recipe = tmp_path / "tok"
    recipe.mkdir()
    (recipe / "recipe.yaml").write_text("vocab_size: 300\n")  # a tokenizer is written among files of other programs
    assert main(["tokenizer", "train", "--inputs", str(english_articles()), "--output", str(recipe), "--vocab-size",
                 "300", "--overwrite", "true"]) == 0
    assert (recipe / "recipe.yaml").exists() and (recipe / "vocab.txt").exists()


# ---- full disks, quotas, files too large --------------------------------------------------------


def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_previous_checkpoint_stays(
        wiki64_with_eval: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The issue: a torch `RuntimeError` traceback and a staging directory left behind. Injected: the second
    checkpoint's optimizer file meets a full disk (torch's own writer would say only "file write failed")."""
    import bertpre.training.checkpoint as checkpoint_module

    real_save = checkpoint_module.torch.save
    calls = {"optimizer": 0}

    def fill_the_disk(value: object, handle: object) -> None:
        name = getattr(handle, "name", "")
        if str(name).endswith("optimizer.pt"):
            calls["optimizer"] += 1
            if calls["optimizer"] == 2:
                handle.write(b"x" * 1000)  # part of it made it to the disk
                raise RuntimeError("[enforce fail at inline_container.cc:672] . file write failed") from OSError(
                    errno.ENOSPC, "No space left on device")
        real_save(value, handle)

    monkeypatch.setattr(checkpoint_module.torch, "save", fill_the_disk)
    run = tmp_path / "run"
    err = refused(capsys, "pretrain", "--data", str(wiki64_with_eval), "--output", str(run), "--max-steps", "6", *FAULT_RUN,
                  match="optimizer.pt: No space left on device (ENOSPC); the disk is full")
    assert "the checkpoint of step 4 was not saved" in err and "step-00000002 is intact" in err
    assert [c.name for c in list_checkpoints(run)] == ["step-00000002"]
    assert not list((run / "checkpoints").glob(".*"))  # no partial checkpoint left
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)  # space freed: the same command resumes
    assert main(["pretrain", "--data", str(wiki64_with_eval), "--output", str(run), "--max-steps", "6", *FAULT_RUN]) == 0
    assert "resumed from" in capsys.readouterr().out and list_checkpoints(run)[-1].name == "step-00000006"


def test_a_full_disk_while_writing_predictions_is_one_line_and_leaves_no_file(
        tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i}.", "label": i % 2}) + "\n" for i in range(8)))
    assert main(["finetune", "--model", str(tiny_export), "--train-file", str(rows), "--eval-file", str(rows), "--epochs",
                 "1", "--output", str(tmp_path / "ft"), "--cpu", "true", "--report-to", "none"]) == 0
    real_fsync = os.fsync

    def no_space_for_predictions(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".predictions.jsonl." in name and not name.endswith(".lock"):  # the temporary file, not the lock
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", no_space_for_predictions)
    out = tmp_path / "predictions.jsonl"
    refused(capsys, "predict", "--model", str(tmp_path / "ft" / "model"), "--input", str(rows), "--output", str(out),
            match=f"{out}: Disk quota exceeded (EDQUOT); the disk quota is exhausted")
    assert not out.exists() and not list(tmp_path.glob(".predictions.jsonl*"))


def _limited_to(size: int):  # noqa: ANN202 - a preexec_fn
    """A child process whose files may grow to ``size`` bytes: the kernel's own EFBIG, as a file system's
    largest file or a `ulimit -f` gives it (SIGXFSZ ignored, so the write fails instead of killing)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


@pytest.mark.parametrize("command", ["export", "pretrain", "prepare"])
def test_a_file_too_large_for_the_file_system_is_one_line_with_nothing_half_written(
        command: str, tiny_run: Path, wiki64_with_eval: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    argv = {"export": ["export", "--checkpoint", str(tiny_run), "--output", str(output)],
            "pretrain": ["pretrain", "--data", str(wiki64_with_eval), "--output", str(output), "--max-steps", "2",
                         *FAULT_RUN],
            "prepare": ["prepare", "--inputs", str(english_articles()), "--output", str(output), "--num-workers", "1"]}
    result = subprocess.run([sys.executable, "-m", "bertpre", *argv[command]], capture_output=True, text=True,
                            preexec_fn=_limited_to(200_000), timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "File too large (EFBIG)" in result.stderr, result.stderr[-3000:]
    assert len([line for line in result.stderr.splitlines() if line.startswith("bertpre: error")]) == 1
    assert not list(tmp_path.glob(".out.*"))  # no staging directory, no lock file left
    if command == "pretrain":  # a run directory keeps its config and log, and no partial checkpoint
        assert not list_checkpoints(output) and not list((output / "checkpoints").iterdir())
    else:
        assert not output.exists()


def test_a_full_tmpfs_is_one_line(tiny_run: Path, tmp_path: Path) -> None:
    """A real full disk: a 2 MiB tmpfs, where the privileges to mount one exist (else skipped)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("no privileges to mount a tmpfs here")
    try:
        result = subprocess.run([sys.executable, "-m", "bertpre", "export", "--checkpoint", str(tiny_run), "--output",
                                 str(mount / "hf")], capture_output=True, text=True, timeout=600,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 2 and "No space left on device (ENOSPC)" in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)

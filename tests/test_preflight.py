"""Pretraining's preflight (read and check everything, write nothing) and the prepared data's typed metadata."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bertpre.core.config import load_config
from bertpre.core.configs import PretrainConfig
from bertpre.core.errors import BertpreError
from bertpre.data.metadata import METADATA_FILE, DataMetadata, read_data_metadata
from bertpre.training.checkpoint import list_checkpoints
from bertpre.training.preflight import preflight

from .conftest import REPO, pretrain_tiny


def tree(directory: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``directory`` with its size and modification time."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.rglob("*"))}


def config_for(data: Path, output: Path, **options: str) -> PretrainConfig:
    settings = {"data": str(data), "output": str(output), "model": str(REPO / "configs" / "model" / "tiny.yaml"),
                "max_steps": "4", "global_batch_size": "8", "per_device_batch_size": "8", "eval_every": "0",
                "report_to": "none", "cpu": "true", "num_workers": "0", **options}
    return load_config(PretrainConfig, None, settings)


@pytest.fixture(scope="module")
def earlier_run(wiki64_with_eval: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step run, to be protected."""
    output = tmp_path_factory.mktemp("earlier") / "run"
    return pretrain_tiny(wiki64_with_eval, output, max_steps="4", global_batch_size="8", per_device_batch_size="8",
                         report_to="none")


def test_preflight_reads_everything_and_writes_nothing(wiki64_with_eval: Path, earlier_run: Path) -> None:
    before, data_before = tree(earlier_run), tree(wiki64_with_eval)
    checked = preflight(config_for(wiki64_with_eval, earlier_run, resume="never", overwrite="true"))
    assert checked.clear_earlier_run  # decided, not done
    assert len(checked.train_data) > 0 and checked.eval_data is not None and checked.resume_from is None
    assert checked.metadata.tokenizer.vocab_size == checked.bert.vocab_size
    assert tree(earlier_run) == before and tree(wiki64_with_eval) == data_before
    resumed = preflight(config_for(wiki64_with_eval, earlier_run, max_steps="6"))
    assert resumed.resume_from == list_checkpoints(earlier_run)[-1] and not resumed.clear_earlier_run
    assert tree(earlier_run) == before


@pytest.mark.parametrize("options, message", [
    ({"model.max_position_embeddings": "32"}, "shorter than the prepared max_seq_length 64"),
    ({"global_batch_size": "100000", "per_device_batch_size": "100000"}, "exceeds the"),
    ({"model.vocab_size": "1000"}, "model.vocab_size: 1000 differs"),
    ({"report_to": "wandb"}, "wandb is not installed"),
])
def test_a_refusal_after_overwrite_keeps_the_earlier_run_whole(wiki64_with_eval: Path, earlier_run: Path,
                                                               options: dict[str, str], message: str) -> None:
    """With --resume never --overwrite true an earlier run is deleted only once every check has passed."""
    pytest.importorskip("tensorboard")
    if options.get("report_to") == "wandb":
        pytest.importorskip("accelerate")
        from bertpre.training.accelerator import installed_trackers

        if "wandb" in installed_trackers():
            pytest.skip("wandb is installed here")
    from bertpre.training.pretrain import pretrain

    before = tree(earlier_run)
    with pytest.raises(BertpreError, match=message):
        pretrain(config_for(wiki64_with_eval, earlier_run, resume="never", overwrite="true", **options),
                 show_progress=False)
    assert tree(earlier_run) == before


def test_a_swapped_tokenizer_inside_the_data_is_refused_before_training(wiki64_with_eval: Path,
                                                                        tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(wiki64_with_eval, data)
    vocab = data / "tokenizer" / "vocab.txt"
    tokens = vocab.read_text(encoding="utf-8").splitlines()
    tokens[100], tokens[101] = tokens[101], tokens[100]  # same size, other tokens
    vocab.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    with pytest.raises(BertpreError, match="not the tokenizer the data was prepared with"):
        preflight(config_for(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


# ---- the typed metadata ----------------------------------------------------------------------


def test_metadata_is_one_typed_object_written_and_read_in_one_place(wiki64_with_eval: Path) -> None:
    metadata = read_data_metadata(wiki64_with_eval)
    assert isinstance(metadata, DataMetadata) and metadata.roots == [wiki64_with_eval]
    assert metadata.max_seq_length == 64 and metadata.tokenizer_dir == wiki64_with_eval / "tokenizer"
    tokenizer = metadata.tokenizer
    assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (0, 2, 3, 4)
    shard = metadata.shards[0]
    assert shard.pairs("train") > 0 and shard.pairs("eval") > 0
    assert shard.to_json() == (wiki64_with_eval / METADATA_FILE).read_text(encoding="utf-8")  # the writer's own bytes


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["tokenizer"].update(vocab_size="30522"), "damaged"),
    (lambda m: m.pop("max_seq_length"), "damaged"),
    (lambda m: m["tokenizer"].update(pad_id=None), "damaged"),
    (lambda m: m.update(summary=[]), "damaged"),
    (lambda m: m.update(format_version=99), "written by a newer bertpre"),
])
def test_a_damaged_or_newer_metadata_file_is_one_line(wiki64_with_eval: Path, tmp_path: Path, edit, message) -> None:
    data = tmp_path / "data"
    data.mkdir()
    record = json.loads((wiki64_with_eval / METADATA_FILE).read_text(encoding="utf-8"))
    edit(record)
    (data / METADATA_FILE).write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(BertpreError, match=message):
        read_data_metadata(data)


def test_shards_of_other_lengths_do_not_read_as_one_dataset(wiki64_with_eval: Path, tmp_path: Path) -> None:
    for name, length in (("a", 64), ("b", 128)):
        (tmp_path / name).mkdir()
        record = json.loads((wiki64_with_eval / METADATA_FILE).read_text(encoding="utf-8"))
        record["max_seq_length"] = length
        (tmp_path / name / METADATA_FILE).write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(BertpreError, match="max_seq_length 128 differs from 64"):
        read_data_metadata(tmp_path)

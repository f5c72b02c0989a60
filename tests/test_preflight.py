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
    assert shard.rows("train") > 0 and shard.rows("eval") > 0
    assert shard.to_json() == (wiki64_with_eval / METADATA_FILE).read_text(encoding="utf-8")  # the writer's own bytes


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["tokenizer"].update(vocab_size="30522"), "damaged"),
    (lambda m: m.pop("max_seq_length"), "damaged"),
    (lambda m: m["tokenizer"].update(pad_id=None), "damaged"),
    (lambda m: m.update(summary=[]), "damaged"),
    (lambda m: m.update(format_version=99), "written by a newer bertpre"),
    (lambda m: m.update(examples=["segments"]), "damaged"),
    (lambda m: m.update(examples="triples"), "examples 'triples' is none of pairs, segments"),
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


# ---- resuming continues one run: what may change, what may not ------------------------------------


@pytest.mark.parametrize("options, change", [
    ({"global_batch_size": "16", "per_device_batch_size": "8"}, "global_batch_size 8 → 16"),
    ({"per_device_batch_size": "4"}, "per_device_batch_size 8 → 4"),
    ({"seed": "7"}, "seed 42 → 7"),
    ({"objective": "mlm"}, "objective mlm_nsp → mlm"),
    ({"mlm_probability": "0.3"}, "mlm_probability 0.15 → 0.3"),
    ({"whole_word_mask": "true"}, "whole_word_mask False → True"),
    ({"learning_rate": "1e-3"}, "learning_rate 0.0001 → 0.001"),
    ({"warmup_steps": "5"}, "warmup_steps 10000 → 5"),
    ({"model.hidden_dropout_prob": "0.0"}, "model.hidden_dropout_prob 0.1 → 0.0"),
    ({"mixed_precision": "bf16"}, "mixed_precision no → bf16"),
    ({"embedding_init": "cooccurrence"}, "embedding_init random → cooccurrence"),
])
def test_resume_refuses_a_change_that_makes_another_experiment_naming_both_values(
        wiki64_with_eval: Path, earlier_run: Path, options: dict[str, str], change: str) -> None:
    with pytest.raises(BertpreError, match="resume: .* was saved by another run") as refusal:
        preflight(config_for(wiki64_with_eval, earlier_run, max_steps="6", **options))
    assert change in str(refusal.value) and "--init-from" in str(refusal.value)


def test_resume_tells_data_by_its_fingerprint_not_its_path(wiki64_with_eval: Path, earlier_run: Path,
                                                          tmp_path: Path) -> None:
    moved = Path(shutil.copytree(wiki64_with_eval, tmp_path / "moved"))  # the same data elsewhere: fine
    assert preflight(config_for(moved, earlier_run, max_steps="6")).resume_from is not None
    other = tmp_path / "other"  # other pairs of the same corpus and tokenizer
    from .conftest import prepare_wiki64

    prepare_wiki64(other, eval_fraction=0.2, seed=7)
    with pytest.raises(BertpreError, match=r"data .* \(fingerprint \w+\) → .*other \(fingerprint \w+, [\d,]+ training "
                                           r"pairs\)"):
        preflight(config_for(other, earlier_run, max_steps="6"))


@pytest.mark.parametrize("options", [
    {"max_steps": "8"}, {"max_tokens": "100000"}, {"max_minutes": "5"}, {"log_every": "3"}, {"eval_every": "2"},
    {"eval_batches": "1"}, {"checkpoint_every": "2"}, {"keep_checkpoints": "5"}, {"num_workers": "1"},
    {"eval_mlm_probability": "0.2"}, {"unpad_inputs": "true"}, {"max_nonfinite_steps": "3"},
])
def test_resume_allows_what_is_meant_to_change(wiki64_with_eval: Path, earlier_run: Path,
                                              options: dict[str, str]) -> None:
    assert preflight(config_for(wiki64_with_eval, earlier_run, **{"max_steps": "6", **options})).resume_from


def test_every_option_is_either_allowed_to_change_on_resume_or_compared() -> None:
    """A new option is refused on resume until someone decides, here, that it may change."""
    from bertpre.training.preflight import _COMPARED_APART, MAY_CHANGE_ON_RESUME, _flat_options

    options = set(_flat_options(config_for(Path("data"), Path("run"))))
    assert (MAY_CHANGE_ON_RESUME | _COMPARED_APART) - options == set()  # no stale names in the lists


def test_a_tokenizer_json_swapped_inside_the_data_is_refused(wiki64_with_eval: Path, tmp_path: Path) -> None:
    """vocab.txt intact, tokenizer.json (what the fast tokenizer reads) of another vocabulary: caught too."""
    data = Path(shutil.copytree(wiki64_with_eval, tmp_path / "data"))
    spec = json.loads((data / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    vocab["the"], vocab["and"] = vocab["and"], vocab["the"]
    (data / "tokenizer" / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(BertpreError, match="the vocabulary of its tokenizer.json differs"):
        preflight(config_for(data, tmp_path / "run"))


def test_a_pinned_schedule_keeps_its_length_however_it_is_spelled(wiki64_with_eval: Path, tmp_path: Path) -> None:
    """A run done in chunks (`--max-steps 4 --schedule-steps 8`) resumes to its end with `--max-steps 8` alone,
    but not with another schedule length."""
    run = pretrain_tiny(wiki64_with_eval, tmp_path / "run", max_steps="4", schedule_steps="8", global_batch_size="8",
                        per_device_batch_size="8", report_to="none")
    assert preflight(config_for(wiki64_with_eval, run, max_steps="8")).resume_from is not None
    with pytest.raises(BertpreError, match="schedule length 8 → 12"):
        preflight(config_for(wiki64_with_eval, run, max_steps="6", schedule_steps="12"))

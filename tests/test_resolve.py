"""Names on the command line: local paths, the defaults shipped inside bertpre, and Hugging Face Hub ids.

Hub ids are resolved offline from a Hugging Face cache built in a temporary directory (the layout
``models--ORG--NAME/snapshots/<sha>/`` + ``refs/main`` that ``huggingface_hub`` writes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bertpre.cli import main
from bertpre.core.config import load_config
from bertpre.core.configs import ModelConfig, PretrainConfig, TokenizerConfig
from bertpre.core.errors import ConfigError
from bertpre.core.resolve import config_file, packaged_path

from .conftest import REPO

TINY_BERT = "bertpre-test/tiny-bert"


def add_to_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """Put the files of ``source`` in ``cache`` as the main revision of model repository ``repo_id``."""
    organisation, name = repo_id.split("/")
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    repository = cache / f"models--{organisation}--{name}"
    snapshot = repository / "snapshots" / revision
    shutil.copytree(source, snapshot)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT-tiny with the default tokenizer, as a Hugging Face directory (what a Hub repository holds)."""
    from bertpre.model.hf_directory import export_model
    from bertpre.model.bert import BertForPreTraining, bert_config

    model = BertForPreTraining(bert_config(ModelConfig.of_size("tiny")))
    return export_model(model, tmp_path_factory.mktemp("hub-source") / "tiny-bert", tokenizer_dir=REPO / "tokenizer")


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, offline, for this process (huggingface_hub reads the variables at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[str, str]:
    """Run the CLI in-process; it must succeed. Its stdout and stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def refused(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run the CLI in-process; it must exit 2 with one error line, the last, and no traceback. That line
    (a line before it may say where a Hub id was found)."""
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("bertpre: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err
    return errors[0]


def prepared_vocab_size(data: Path) -> int:
    return json.loads((data / "prepare.json").read_text())["tokenizer"]["vocab_size"]


def prepare_args(corpus: Path, output: Path, *extra: str) -> list[str]:
    return ["prepare", "--inputs", str(corpus), "--output", str(output), "--max-seq-length", "64",
            "--num-workers", "1", "--eval-fraction", "0.1", *extra]


def offline_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf-home")}


# ---- the defaults shipped inside the package ---------------------------------------------------


def test_packaged_defaults_resolve_outside_the_repository(tmp_path: Path, small_corpus: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert not Path("tokenizer").exists() and not Path("configs").exists()
    tokenizer = packaged_path("tokenizer")
    assert tokenizer is not None
    assert (tokenizer / "vocab.txt").read_bytes() == (REPO / "tokenizer" / "vocab.txt").read_bytes()

    _, err = run_cli(capsys, *prepare_args(small_corpus, tmp_path / "data"))  # --tokenizer left at its default
    assert prepared_vocab_size(tmp_path / "data") == 30522
    assert "--tokenizer tokenizer: bertpre's packaged default tokenizer" in err

    recipe = load_config(PretrainConfig, "configs/pretrain/tiny-cpu.yaml")  # its model: ../model/tiny.yaml too
    assert (recipe.model.num_hidden_layers, recipe.model.hidden_size) == (2, 128)
    assert "configs/pretrain/tiny-cpu.yaml: not in this directory; using bertpre's packaged copy" in capsys.readouterr().err
    for model in ("configs/model/mini.yaml", "mini"):
        config = load_config(PretrainConfig, overrides={"model": model, "max_steps": "1", "model.hidden_dropout_prob": "0"})
        assert (config.model.num_hidden_layers, config.model.hidden_size, config.model.hidden_dropout_prob) == (4, 256, 0)
    with pytest.raises(ConfigError, match=r"model: 'huge' is neither a YAML file nor one of bertpre's model configs "
                                          r"\(base, large, medium, mini, modernbert-base, modernbert-mini, modernbert-small, modernbert-tiny, small, "
                                          r"tiny\)"):
        load_config(PretrainConfig, overrides={"model": "huge", "max_steps": "1"})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(PretrainConfig, "configs/pretrain/no-such-recipe.yaml")


def test_local_paths_win_over_packaged_defaults_and_hub_ids(tmp_path: Path, small_corpus: Path, tiny_bert: Path,
                                                            hub_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    from bertpre.tokenizer.train import train_tokenizer

    monkeypatch.chdir(tmp_path)
    train_tokenizer(TokenizerConfig(inputs=[str(small_corpus)], output="tokenizer", vocab_size=120, min_frequency=1),
                    show_progress=False)
    shutil.copytree("tokenizer", TINY_BERT)  # a local directory spelled like the Hub id that is also cached
    add_to_hub_cache(hub_cache, TINY_BERT, tiny_bert)
    small = len(Path("tokenizer/vocab.txt").read_text().splitlines())
    Path("configs/model").mkdir(parents=True)
    Path("configs/model/mini.yaml").write_text("hidden_size: 64\nnum_attention_heads: 2\n")
    capsys.readouterr()

    for name, output in (("tokenizer", "data-default"), (TINY_BERT, "data-hub-spelling")):
        _, err = run_cli(capsys, *prepare_args(small_corpus, tmp_path / output, "--tokenizer", name))
        assert prepared_vocab_size(tmp_path / output) == small
        assert "packaged" not in err and "Hugging Face Hub" not in err
    assert config_file("configs/model/mini.yaml") == Path("configs/model/mini.yaml")
    config = load_config(PretrainConfig, overrides={"model": "configs/model/mini.yaml", "max_steps": "1"})
    assert config.model.hidden_size == 64


# ---- Hugging Face Hub ids --------------------------------------------------------------------------


def test_hub_ids_resolve_from_the_offline_cache_in_every_command(tmp_path: Path, small_corpus: Path, tiny_bert: Path,
                                                                  hub_cache: Path, capsys: pytest.CaptureFixture) -> None:
    snapshot = add_to_hub_cache(hub_cache, TINY_BERT, tiny_bert)
    data = tmp_path / "data"
    _, err = run_cli(capsys, *prepare_args(small_corpus, data, "--tokenizer", TINY_BERT))
    assert f"--tokenizer {TINY_BERT}: Hugging Face Hub tokenizer ({snapshot})" in err
    assert json.loads((data / "prepare.json").read_text())["tokenizer"]["path"] == str(snapshot.resolve())

    out, err = run_cli(capsys, "pretrain", "--data", str(data), "--output", str(tmp_path / "continued"), "--init-from",
                       TINY_BERT, "--max-steps", "1", "--global-batch-size", "8", "--per-device-batch-size", "8",
                       "--num-workers", "0", "--eval-every", "0", "--cpu")
    assert f"--init-from {TINY_BERT}: Hugging Face Hub model ({snapshot})" in err
    assert f"initialised from {snapshot} (a Hugging Face model: continued pretraining" in out

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i} is {'good' if i % 2 else 'bad'}.", "label": i % 2}) + "\n"
                            for i in range(16)))
    finetuned = tmp_path / "finetuned"
    out, err = run_cli(capsys, "finetune", "--model", TINY_BERT, "--train-file", str(rows), "--eval-file", str(rows),
                       "--epochs", "1", "--per-device-batch-size", "8", "--output", str(finetuned), "--cpu")
    assert f"--model {TINY_BERT}: Hugging Face Hub model ({snapshot})" in err
    assert (finetuned / "model" / "vocab.txt").read_bytes() == (tiny_bert / "vocab.txt").read_bytes()

    add_to_hub_cache(hub_cache, "bertpre-test/tiny-classifier", finetuned / "model")
    predictions = tmp_path / "predictions.jsonl"
    run_cli(capsys, "predict", "--model", "bertpre-test/tiny-classifier", "--input", str(rows), "--output",
            str(predictions), "--cpu")
    assert len(predictions.read_text().splitlines()) == 16


def test_a_hub_id_not_in_the_offline_cache_is_one_line(tmp_path: Path, small_corpus: Path, hub_cache: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    missing = "nobody/not-cached"
    expected = (f"bertpre: error: {{option}} {missing}: not a local directory and not in the Hugging Face cache "
                f"(offline); download it with `hf download {missing}` or give a path")
    out = tmp_path / "out"
    cases = [("--tokenizer", prepare_args(small_corpus, out, "--tokenizer", missing)),
             ("--init-from", ["pretrain", "--data", str(tmp_path), "--output", str(out), "--init-from", missing,
                              "--max-steps", "1"]),
             ("--model", ["finetune", "--model", missing, "--train-file", str(small_corpus), "--output", str(out)]),
             ("--model", ["predict", "--model", missing, "--input", str(small_corpus), "--output", str(out / "p.jsonl")])]
    for option, argv in cases:
        code = main(argv)
        assert (code, capsys.readouterr().err.strip()) == (2, expected.format(option=option)), argv
        assert not out.exists()


@pytest.mark.parametrize("failure", ["ProxyError", "ReadError", "RemoteProtocolError"])
def test_a_network_failure_that_is_not_an_oserror_is_one_line(failure: str, tmp_path: Path, small_corpus: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    import httpx
    import huggingface_hub

    def unreachable(*args: object, **kwargs: object) -> str:
        raise getattr(httpx, failure)("the proxy refused the connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    err = refused(capsys, "finetune", "--model", "nobody/unreachable", "--train-file", str(small_corpus),
                  "--output", str(tmp_path / "out"))
    assert err == ("bertpre: error: --model nobody/unreachable: could not get it from the Hugging Face Hub (the proxy "
                   "refused the connection); download it with `hf download nobody/unreachable` or give a path")
    assert not (tmp_path / "out").exists()


def test_hub_snapshots_get_the_checks_of_local_directories(tmp_path: Path, small_corpus: Path, tiny_bert: Path,
                                                            hub_cache: Path, capsys: pytest.CaptureFixture) -> None:
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    (bpe / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}))
    add_to_hub_cache(hub_cache, "bertpre-test/bpe", bpe)
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert / name, weights_only / name)
    add_to_hub_cache(hub_cache, "bertpre-test/weights-only", weights_only)

    err = refused(capsys, *prepare_args(small_corpus, tmp_path / "a", "--tokenizer", "bertpre-test/bpe"))
    assert "models--bertpre-test--bpe" in err and "a BPE tokenizer; BERT needs WordPiece" in err
    err = refused(capsys, *prepare_args(small_corpus, tmp_path / "b", "--tokenizer", "bertpre-test/weights-only"))
    assert "models--bertpre-test--weights-only" in err and "a model directory without tokenizer files" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_cli_honours_hf_hub_offline_and_the_cache_variables(tmp_path: Path, small_corpus: Path,
                                                                 tiny_bert: Path) -> None:
    """As a user runs it: a fresh process that reads HF_HUB_OFFLINE and HF_HUB_CACHE from its environment."""
    cache = tmp_path / "cache"
    snapshot = add_to_hub_cache(cache, TINY_BERT, tiny_bert)
    command = [sys.executable, "-m", "bertpre"]
    found = subprocess.run([*command, *prepare_args(small_corpus, tmp_path / "data", "--tokenizer", TINY_BERT)],
                           cwd=tmp_path, env=offline_env(cache), capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    assert f"Hugging Face Hub tokenizer ({snapshot})" in found.stderr
    assert prepared_vocab_size(tmp_path / "data") == 30522
    missing = subprocess.run([*command, *prepare_args(small_corpus, tmp_path / "other", "--tokenizer", "bert-base-uncased")],
                             cwd=tmp_path, env=offline_env(cache), capture_output=True, text=True, timeout=300)
    assert (missing.returncode, missing.stderr.strip()) == (
        2, "bertpre: error: --tokenizer bert-base-uncased: not a local directory and not in the Hugging Face cache "
           "(offline); download it with `hf download bert-base-uncased` or give a path")

"""Any BERT WordPiece vocabulary, wherever its special tokens sit; anything else refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bertpre.core.config import load_config
from bertpre.core.configs import ExportConfig, PrepareConfig, PretrainConfig
from bertpre.data.dataset import PretrainingData
from bertpre.core.errors import BertpreError
from bertpre.export.export import export_checkpoint
from bertpre.data.masking import MaskingCollator
from bertpre.data.prepare import prepare_pretraining_data
from bertpre.training.pretrain import pretrain

from .conftest import REPO, english_articles


@pytest.fixture(scope="module")
def standard_vocabulary(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """all-MiniLM-L6-v2's tokenizer: BERT's uncased vocabulary, [PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103."""
    directory = tmp_path_factory.mktemp("vocab") / "bert-uncased"
    directory.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, standard_vocabulary: Path) -> Path:
    output = tmp_path_factory.mktemp("data") / "bert-vocab"
    prepare_pretraining_data(PrepareConfig(inputs=[str(english_articles())], output=str(output), num_workers=1,
                                           tokenizer=str(standard_vocabulary), max_seq_length=64, eval_fraction=0.2),
                             show_progress=False)
    return output


def test_pairs_use_the_tokenizers_own_special_ids(prepared: Path) -> None:
    data = PretrainingData(prepared, "train")
    for index in range(0, len(data), 7):
        ids = data.example(index)["input_ids"].tolist()
        assert ids[0] == 101 and ids[-1] == 102 and ids.count(102) == 2 and ids.count(101) == 1
        assert 0 not in ids and 103 not in ids


def test_masking_never_chooses_or_inserts_special_tokens(prepared: Path, standard_vocabulary: Path) -> None:
    from transformers import AutoTokenizer

    collator = MaskingCollator.from_tokenizer(AutoTokenizer.from_pretrained(standard_vocabulary), mlm_probability=0.5)
    data = PretrainingData(prepared, "train")
    batch = collator([data.example(i) for i in range(64)], generator=torch.Generator().manual_seed(0))
    original = torch.where(batch["labels"] >= 0, batch["labels"], batch["input_ids"])
    chosen = batch["labels"] >= 0
    specials = torch.tensor([0, 100, 101, 102, 103])
    assert not chosen[torch.isin(original, specials)].any() and chosen.sum() > 500
    replaced = batch["input_ids"][chosen]
    assert (replaced == 103).float().mean() > 0.7  # [MASK] is 103 here, not 4
    random_or_kept = replaced[replaced != 103]
    assert not torch.isin(random_or_kept, specials).any()


@pytest.mark.slow
def test_pretraining_and_export_with_a_standard_bert_vocabulary(prepared: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer, BertForPreTraining

    config = load_config(PretrainConfig, None, {
        "data": str(prepared), "output": str(tmp_path / "run"), "model": str(REPO / "configs" / "model" / "tiny.yaml"),
        "max_steps": "4", "global_batch_size": "8", "per_device_batch_size": "8", "warmup_steps": "1",
        "learning_rate": "1e-3", "eval_every": "0", "num_workers": "0", "cpu": "true"})
    summary = pretrain(config, show_progress=False)
    assert summary.step == 4 and summary.last_eval["eval_mlm_loss"] > 0
    exported = export_checkpoint(ExportConfig(checkpoint=str(tmp_path / "run"), output=str(tmp_path / "hf")))
    model = BertForPreTraining.from_pretrained(exported)
    tokenizer = AutoTokenizer.from_pretrained(exported)
    assert tokenizer.mask_token_id == 103 and model.config.pad_token_id == 0
    inputs = tokenizer("the [MASK] of the river.", return_tensors="pt")
    assert model(**inputs).prediction_logits.shape[-1] == 30522


def test_a_model_directory_without_tokenizer_files_is_refused(tmp_path: Path, minilm_dir: Path) -> None:
    model_only = tmp_path / "model-only"
    model_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(minilm_dir / name, model_only / name)
    with pytest.raises(BertpreError, match="model directory without tokenizer files"):
        prepare_pretraining_data(PrepareConfig(inputs=[str(english_articles())], output=str(tmp_path / "out"),
                                               tokenizer=str(model_only)), show_progress=False)
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_that_is_not_wordpiece_is_refused(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(["the river rose after three days of rain"] * 10,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]))
    (tmp_path / "bpe").mkdir()
    bpe.save(str(tmp_path / "bpe" / "tokenizer.json"))
    with pytest.raises(BertpreError, match="a BPE tokenizer; BERT needs WordPiece"):
        prepare_pretraining_data(PrepareConfig(inputs=[str(english_articles())], output=str(tmp_path / "out"),
                                               tokenizer=str(tmp_path / "bpe")), show_progress=False)

"""The tokenizer contract: trained WordPiece loads in transformers as a BERT tokenizer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from bertpre.core.config import load_config
from bertpre.core.configs import SPECIAL_TOKENS, TokenizerConfig
from bertpre.core.errors import BertpreError, ConfigError
from bertpre.tokenizer.train import train_tokenizer

from .conftest import REPO, english_articles, shared_path


def train(inputs: list[Path | str], output: Path, **overrides: object):
    config = TokenizerConfig(inputs=[str(p) for p in inputs], output=str(output), **overrides)
    return train_tokenizer(config, show_progress=False)


@pytest.fixture(scope="module")
def wiki_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("tok") / "wiki"
    train([english_articles()], output, vocab_size=2000)
    return output


def test_autotokenizer_loads_a_fast_bert_tokenizer_with_fixed_special_ids(wiki_tokenizer: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(wiki_tokenizer)
    assert tokenizer.is_fast and isinstance(tokenizer, BertTokenizer)
    assert len(tokenizer) == 2000
    ids = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id,
           tokenizer.sep_token_id, tokenizer.mask_token_id]
    assert ids == [0, 1, 2, 3, 4]
    assert tokenizer.convert_ids_to_tokens(ids) == list(SPECIAL_TOKENS)


def test_pair_encodes_as_cls_a_sep_b_sep_with_token_types(wiki_tokenizer: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(wiki_tokenizer)
    a = tokenizer("The history of anarchism", add_special_tokens=False)["input_ids"]
    b = tokenizer("Political philosophy.", add_special_tokens=False)["input_ids"]
    encoded = tokenizer("The history of anarchism", "Political philosophy.")
    assert encoded["input_ids"] == [2, *a, 3, *b, 3]
    assert encoded["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    assert tokenizer.decode(encoded["input_ids"], skip_special_tokens=True) == "the history of anarchism political philosophy."


def test_vocab_txt_gives_the_classic_tokenizer_the_same_tokens(wiki_tokenizer: Path) -> None:
    fast = AutoTokenizer.from_pretrained(wiki_tokenizer)
    classic = BertTokenizerLegacy(str(wiki_tokenizer / "vocab.txt"))
    text = english_articles().read_text(encoding="utf-8").splitlines()[2:40]
    for line in text:
        assert fast.tokenize(line) == classic.tokenize(line), line
    assert fast.convert_tokens_to_ids(["##s", "the"]) == classic.convert_tokens_to_ids(["##s", "the"])


def test_uncased_strips_accents_and_cased_keeps_them(tmp_path: Path, small_corpus: Path) -> None:
    extra = tmp_path / "accents.txt"
    extra.write_text("Café crème Zoë naïve résumé\n" * 5, encoding="utf-8")
    train([small_corpus, extra], tmp_path / "uncased", vocab_size=300, min_frequency=1)
    train([small_corpus, extra], tmp_path / "cased", vocab_size=300, min_frequency=1, lowercase=False)
    uncased = AutoTokenizer.from_pretrained(tmp_path / "uncased")
    cased = AutoTokenizer.from_pretrained(tmp_path / "cased")
    assert "".join(uncased.tokenize("Café")).replace("#", "") == "cafe"
    assert "".join(cased.tokenize("Café")).replace("#", "") == "Café"


def test_extra_special_tokens_follow_the_bert_ones(tmp_path: Path, small_corpus: Path) -> None:
    train([small_corpus], tmp_path / "tok", vocab_size=300, extra_special_tokens=["[DOC]", "[URL]"])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tokenizer.convert_tokens_to_ids(["[DOC]", "[URL]"]) == [5, 6]
    assert tokenizer.tokenize("the [URL] fox") == ["the", "[URL]", "fox"]


def test_same_input_and_options_give_the_same_vocabulary(tmp_path: Path, wiki_10docs: Path) -> None:
    for name in ("a", "b"):
        train([wiki_10docs], tmp_path / name, vocab_size=3000)
    for file in ("vocab.txt", "tokenizer.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_reads_jsonl_parquet_and_gzip_inputs(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"body": f"Document number {i} talks about zebras and giraffes.", "id": i} for i in range(30)]
    with gzip.open(tmp_path / "docs.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    pq.write_table(pa.table({"body": ["Parquet rows mention quokkas often."] * 10}), tmp_path / "docs.parquet")
    train([tmp_path / "docs.jsonl.gz", tmp_path / "docs.parquet"], tmp_path / "tok",
          vocab_size=300, min_frequency=1, text_column="body")
    vocab = (tmp_path / "tok" / "vocab.txt").read_text().split()
    assert "zebras" in vocab and "quokkas" in vocab


def test_the_projects_default_tokenizer_is_bert_sized_and_regenerates_from_its_recipe(tmp_path: Path) -> None:
    shared_path("pretrain/wikipedia_samples/enwiki_gensim_106docs.txt")
    tokenizer = AutoTokenizer.from_pretrained(REPO / "tokenizer")
    assert len(tokenizer) == 30522 and tokenizer.mask_token_id == 4
    recipe = load_config(TokenizerConfig, REPO / "tokenizer" / "recipe.yaml",
                         {"output": str(tmp_path / "regenerated")})
    recipe.inputs = [str(REPO / p) for p in recipe.inputs]
    train_tokenizer(recipe, show_progress=False)
    assert (tmp_path / "regenerated" / "vocab.txt").read_bytes() == (REPO / "tokenizer" / "vocab.txt").read_bytes()


# ---- bad input: one line naming the path, nothing written -------------------------------------


def assert_refused(inputs: list[Path | str], output: Path, match: str, **overrides: object) -> None:
    with pytest.raises((BertpreError, ConfigError), match=match) as error:
        train(inputs, output, **overrides)
    assert "\n" not in str(error.value)
    assert not output.exists(), "nothing may be written when training fails"
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]


def test_missing_path_is_refused(tmp_path: Path) -> None:
    assert_refused([tmp_path / "nope.txt"], tmp_path / "out", match=r"nope.txt: no such file")


def test_empty_corpus_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n\x07\n")
    assert_refused([empty], tmp_path / "out", match="empty.txt: the corpus is empty")


def test_directory_without_text_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "image.png").write_bytes(b"\x89PNG")
    assert_refused([tmp_path / "data"], tmp_path / "out", match="data: directory has no text files")


def test_binary_file_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "model.txt"
    binary.write_bytes(b"abc\x00\x01\x02" * 100)
    assert_refused([binary], tmp_path / "out", match="model.txt: looks like a binary file")


def test_non_utf8_file_names_the_byte_offset(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("first line ok\nna\u00efve\n".encode("latin-1"))
    assert_refused([latin1], tmp_path / "out", match=r"latin1.txt: byte offset 16 is not valid UTF-8")


def test_vocab_size_smaller_than_the_alphabet_is_refused(tmp_path: Path, wiki_10docs: Path) -> None:
    assert_refused([wiki_10docs], tmp_path / "out", match="vocab_size: 100 is smaller than the corpus alphabet",
                   vocab_size=100)


def test_non_empty_output_directory_is_not_overwritten_unless_asked(tmp_path: Path, small_corpus: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(BertpreError, match="directory is not empty"):
        train([small_corpus], output, vocab_size=300)
    train([small_corpus], output, vocab_size=300, overwrite=True)
    assert (output / "keep.txt").read_text() == "mine" and (output / "vocab.txt").exists()


def test_words_longer_than_wordpiece_reads_are_left_out_of_training(tmp_path: Path, small_corpus: Path) -> None:
    # Such a word is [UNK] for WordPiece; the trainer's cost grows with the square of its length.
    rng = __import__("random").Random(0)
    blob = tmp_path / "blob.txt"
    blob.write_text("".join(rng.choice("abcdefghij") for _ in range(300_000)) + "\n", encoding="utf-8")
    train([small_corpus], tmp_path / "plain", vocab_size=300, min_frequency=1)
    train([small_corpus, blob], tmp_path / "with-blob", vocab_size=300, min_frequency=1)
    assert (tmp_path / "with-blob" / "vocab.txt").read_text() == (tmp_path / "plain" / "vocab.txt").read_text()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "with-blob")
    assert tokenizer.tokenize("x" * 101) == ["[UNK]"]

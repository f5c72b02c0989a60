"""Pretraining data: sentence splitting, next-sentence pairs (statistically), sharding, bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from bertpre.core.configs import CorpusConfig, PrepareConfig
from bertpre.readers.corpus import read_documents
from bertpre.core.errors import BertpreError
from bertpre.data.dataset import PretrainingData
from bertpre.data.pairs import create_next_sentence_pairs, document_rng, pair_to_features
from bertpre.data.prepare import prepare_pretraining_data
from bertpre.readers.sentences import split_sentences

from .conftest import REPO, english_articles, shared_path, uses_shared_articles

TOKENIZER = str(REPO / "tokenizer")


def prepare(inputs: list[Path | str], output: Path, **overrides: object):
    options = {"tokenizer": TOKENIZER, "num_workers": 1, **overrides}
    config = PrepareConfig(inputs=[str(p) for p in inputs], output=str(output), **options)
    return prepare_pretraining_data(config, show_progress=False)


@pytest.fixture(scope="module")
def wiki_documents() -> list[list[list[int]]]:
    """The 10 CI Wikipedia articles, sentence-split and tokenized with the default tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = CorpusConfig(inputs=[str(english_articles())])
    documents = []
    for document in read_documents(config):
        sentences = [s for p in document.paragraphs for s in split_sentences(p)]
        ids = tokenizer(sentences, add_special_tokens=False, verbose=False)["input_ids"]
        documents.append([i for i in ids if i])
    return documents


@pytest.fixture(scope="module")
def prepared_wiki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("data") / "wiki"
    prepare([english_articles()], output, max_seq_length=64, eval_fraction=0.2)
    return output


# ---- sentences -------------------------------------------------------------------------------


def test_split_sentences_respects_abbreviations_initials_and_quotes() -> None:
    text = ('Dr. Smith met J. R. R. Tolkien in the U.S. on Jan. 5. They talked, e.g. about maps! '
            '"Was it late?" he asked. It was 3.5 hours later.')
    assert split_sentences(text) == [
        "Dr. Smith met J. R. R. Tolkien in the U.S. on Jan. 5.",
        "They talked, e.g. about maps!",
        '"Was it late?" he asked.',
        "It was 3.5 hours later.",
    ]
    assert split_sentences("no terminal punctuation") == ["no terminal punctuation"]


# ---- pairs: the reference algorithm, statistically -------------------------------------------


def test_is_next_ratio_is_half_and_random_b_never_comes_from_the_same_document(wiki_documents) -> None:
    pairs = []
    for dupe_pass in range(5):
        for index in range(len(wiki_documents)):
            rng = document_rng(7, dupe_pass, index)
            pairs.extend(create_next_sentence_pairs(wiki_documents, index, 128, 0.1, rng))
    assert len(pairs) > 4000
    is_next = np.mean([not p.is_random_next for p in pairs])
    assert abs(is_next - 0.5) <= 0.02, is_next
    for pair in pairs:
        if pair.is_random_next:
            assert pair.b_document != pair.document
        else:
            assert pair.b_document == pair.document
        assert 1 <= len(pair.tokens_a) and 1 <= len(pair.tokens_b)
        assert len(pair.tokens_a) + len(pair.tokens_b) <= 128 - 3


def test_is_next_is_half_even_when_documents_are_short() -> None:
    # Short documents are where a rule for one-sentence chunks tilts the labels (the reference: 40-46%).
    rng = random.Random(0)
    documents = [[[rng.randint(5, 999) for _ in range(rng.randint(3, 60))] for _ in range(rng.randint(1, 4))]
                 for _ in range(3000)]
    pairs = []
    for dupe_pass in range(3):
        for index in range(len(documents)):
            pairs += create_next_sentence_pairs(documents, index, 64, 0.1, document_rng(11, dupe_pass, index))
    assert len(pairs) > 10_000
    assert abs(np.mean([not p.is_random_next for p in pairs]) - 0.5) <= 0.01


def test_a_lone_sentence_keeps_its_coin_and_takes_its_true_neighbour() -> None:
    long_sentence, short = list(range(10, 40)), [7, 8, 9]
    documents = [[short, long_sentence, [50, 51], [60, 61, 62]], [[70, 71], [72, 73]], [[80], [81]]]
    seen_true_lone = seen_true_last = False
    for seed in range(200):
        pairs = create_next_sentence_pairs(documents, 0, 16, 0.0, document_rng(seed, 0, 0))
        for pair in pairs:
            if pair.is_random_next:
                continue
            if pair.tokens_b == [50, 51] and set(pair.tokens_a) <= set(long_sentence):
                seen_true_lone = True  # a sentence longer than the target: B is the following sentence
            if pair.tokens_b == [60, 61, 62]:
                seen_true_last = True  # the lone last sentence: B, after the text before it as A
                before = " " + " ".join(map(str, short + long_sentence + [50, 51])) + " "
                assert " " + " ".join(map(str, pair.tokens_a)) + " " in before  # (truncation may cut either end)
    assert seen_true_lone and seen_true_last
    assert create_next_sentence_pairs([[[5, 6, 7]], [[8, 9], [10]]], 0, 32, 0.1, random.Random(0)) == []


def test_true_next_pairs_are_contiguous_text_of_the_document(wiki_documents) -> None:
    document = wiki_documents[4]
    text = " " + " ".join(str(t) for sentence in document for t in sentence) + " "
    checked = 0
    for pair in create_next_sentence_pairs(wiki_documents, 4, 128, 0.0, document_rng(3, 0, 4)):
        if pair.is_random_next:
            continue
        # truncation may cut either end of A and of B, but each is a verbatim span and B follows A
        a = " " + " ".join(map(str, pair.tokens_a)) + " "
        b = " " + " ".join(map(str, pair.tokens_b)) + " "
        assert a in text and b in text
        assert text.index(b, text.index(a)) >= text.index(a) + len(a) - 1
        checked += 1
    assert checked > 10


def test_short_seq_prob_produces_shorter_targets(wiki_documents) -> None:
    def mean_length(short_seq_prob: float) -> float:
        lengths = []
        for index in range(len(wiki_documents)):
            pairs = create_next_sentence_pairs(wiki_documents, index, 128, short_seq_prob, document_rng(1, 0, index))
            lengths += [len(p.tokens_a) + len(p.tokens_b) for p in pairs]
        return float(np.mean(lengths))

    assert mean_length(0.9) < mean_length(0.0) - 20


def test_single_document_is_refused() -> None:
    with pytest.raises(BertpreError, match="at least two documents"):
        create_next_sentence_pairs([[[5, 6, 7]]], 0, 32, 0.1, random.Random(0))


def test_pair_features_are_cls_a_sep_b_sep_with_token_types() -> None:
    from bertpre.data.pairs import SentencePair

    input_ids, types = pair_to_features(SentencePair([10, 11], [12], False, 0, 0), cls_id=2, sep_id=3)
    assert input_ids == [2, 10, 11, 3, 12, 3]
    assert types == [0, 0, 0, 0, 1, 1]


# ---- prepare: the saved dataset --------------------------------------------------------------


def test_prepared_examples_are_well_formed(prepared_wiki: Path) -> None:
    metadata = json.loads((prepared_wiki / "prepare.json").read_text())
    assert metadata["max_seq_length"] == 64
    for split in ("train", "eval"):
        data = PretrainingData(prepared_wiki, split)
        assert len(data) > 50
        assert data.table.schema.field("input_ids").type.value_type == "uint16"
        documents = data.table.column("document").to_numpy()
        b_documents = data.table.column("b_document").to_numpy()
        for index in range(len(data)):
            example = data.example(index)
            ids, types = example["input_ids"].tolist(), example["token_type_ids"].tolist()
            assert len(ids) <= 64 and len(ids) == len(types)
            sep_positions = [i for i, t in enumerate(ids) if t == 3]
            assert ids[0] == 2 and len(sep_positions) == 2 and sep_positions[1] == len(ids) - 1
            first_sep = sep_positions[0]
            assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
            assert 0 not in ids and 4 not in ids and ids.count(2) == 1
            is_random = example["next_sentence_label"] == 1
            assert (documents[index] != b_documents[index]) == is_random
    assert (prepared_wiki / "tokenizer" / "vocab.txt").exists()


def test_held_out_split_is_by_document(prepared_wiki: Path) -> None:
    summary = json.loads((prepared_wiki / "prepare.json").read_text())["summary"]
    assert summary["train_documents"] + summary["eval_documents"] == summary["documents"] == 10
    assert summary["eval_documents"] == 2
    train = PretrainingData(prepared_wiki, "train")
    evaluation = PretrainingData(prepared_wiki, "eval")
    # eval examples only index eval documents, and their text never occurs in train examples
    assert evaluation.table.column("document").to_numpy().max() < 2
    train_text = {tuple(train.example(i)["input_ids"][1:9]) for i in range(len(train))}
    eval_heads = [tuple(evaluation.example(i)["input_ids"][1:9]) for i in range(len(evaluation))]
    assert sum(head in train_text for head in eval_heads) == 0


def test_same_seed_gives_identical_bytes_for_any_worker_count(tmp_path: Path) -> None:
    corpus = english_articles()
    prepare([corpus], tmp_path / "one", num_workers=1, dupe_factor=2)
    prepare([corpus], tmp_path / "two", num_workers=2, dupe_factor=2)
    for split in ("train", "eval"):
        one = sorted((tmp_path / "one" / split).glob("*.arrow"))
        two = sorted((tmp_path / "two" / split).glob("*.arrow"))
        assert one and [f.read_bytes() for f in one] == [f.read_bytes() for f in two]
    prepare([corpus], tmp_path / "other-seed", num_workers=1, dupe_factor=2, seed=99)
    assert ((tmp_path / "other-seed" / "train" / "data-00000-of-00001.arrow").read_bytes()
            != (tmp_path / "one" / "train" / "data-00000-of-00001.arrow").read_bytes())


# Digests of the Arrow files bertpre 0.1.0 (5f72407) wrote through `datasets`, one worker: the same inputs and
# seed must keep giving the same bytes (datasets' padding of record-batch buffers included).
PINNED_DIGESTS = {
    "pairs64-eval20-dupe2": ({"max_seq_length": 64, "eval_fraction": 0.2, "dupe_factor": 2}, {
        "eval/data-00000-of-00001.arrow": "a20e151c45e664330ea1bfb1e9f50b76fcf658b6dd8b8595008dbf3004978677",
        "train/data-00000-of-00001.arrow": "f96759ab483a88a1eeddfdc226f8a3e35dc1f144506677ec8412c62a06197509"}),
    "short-targets-small-shards": ({"short_seq_prob": 1.0, "max_shard_size": "100KB", "seed": 3}, {
        "eval/data-00000-of-00001.arrow": "2b99d1fe5b6997164c7b724913cc70c42c05f32e6adc7138e41804869fcb7901",
        "train/data-00000-of-00004.arrow": "63e745cdebadf1c523982ab9a5a74dc7f898281643eeda204572742c0ebdd05a",
        "train/data-00001-of-00004.arrow": "3f309ec15c8b3a66fc30f66e3f5f1f6f73eddc73a533e4695c9d2debda3b1c28",
        "train/data-00002-of-00004.arrow": "37b56f8b0faedc85022e6cbcaeff35cd842bad5bd4f2ab4e101c3093ab311995",
        "train/data-00003-of-00004.arrow": "a1c7a50d9bdd1829db91cb0e14690306599a3c934f0cc16de51a5339752b2533"}),
}


@pytest.mark.parametrize("name", PINNED_DIGESTS)
def test_the_bytes_are_those_bertpre_wrote_before(name: str, tmp_path: Path) -> None:
    corpus = english_articles()
    if not uses_shared_articles(corpus):
        pytest.skip("the pinned digests are of the shared Wikipedia slice")
    options, digests = PINNED_DIGESTS[name]
    prepare([corpus], tmp_path / "out", **options)
    written = {str(p.relative_to(tmp_path / "out")): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted((tmp_path / "out").rglob("*.arrow"))}
    assert written == digests


def test_files_read_by_workers_or_here_give_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bertpre.data.tokenize_documents as tokenize_documents

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for file in sorted(shared_path("pretrain/inaugural").glob("*.txt"))[:12]:
        (inputs / file.name).write_bytes(file.read_bytes())
    # files above this size are read by the main process and handed out as batches of documents
    monkeypatch.setattr(tokenize_documents, "LARGEST_FILE_TASK", 12_000)
    for workers in (1, 2, 3):
        prepare([inputs], tmp_path / str(workers), num_workers=workers, document_boundary="file", eval_fraction=0.2)
    files = sorted((tmp_path / "1").rglob("*.arrow"))
    assert len(files) == 2
    for workers in (2, 3):
        assert [f.read_bytes() for f in files] == [(tmp_path / str(workers) / f.relative_to(tmp_path / "1")).read_bytes()
                                                   for f in files]


def test_workers_share_one_large_file_and_read_small_files_themselves(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from bertpre.data.tokenize_documents import DocumentsTask, FileTask, document_tasks

    monkeypatch.setattr("bertpre.data.tokenize_documents.CHARACTERS_PER_TASK", 50_000)
    config = PrepareConfig(inputs=["unused"])
    one_file = list(document_tasks(config, [str(english_articles())], 2, tmp_path / "one"))
    assert len(one_file) >= 4 and all(isinstance(task, DocumentsTask) for task in one_file)
    files = [str(path) for path in sorted(shared_path("pretrain/inaugural").glob("*.txt"))]
    assert all(isinstance(task, FileTask) for task in document_tasks(config, files, 2, tmp_path / "many"))


def test_deduplication_drops_a_line_seen_in_an_earlier_file(tmp_path: Path) -> None:
    shared = "This paragraph is in both files. It has two sentences."
    (tmp_path / "a.txt").write_text(f"{shared}\nThe first file goes on. Then it stops.\n")
    (tmp_path / "b.txt").write_text(f"{shared}\nThe second file says more. And more again.\n")
    summary = prepare([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "out", deduplicate=True,
                      document_boundary="file", eval_fraction=0, num_workers=2)
    assert summary.duplicate_lines == 1 and summary.sentences == 6


def test_a_split_loads_with_datasets_as_with_pretraining_data(prepared_wiki: Path) -> None:
    import datasets

    for split in ("train", "eval"):
        loaded = datasets.load_from_disk(str(prepared_wiki / split))
        ours = PretrainingData(prepared_wiki, split)
        assert len(loaded) == len(ours) > 0
        assert loaded.data.table.equals(ours.table)


def test_a_bad_max_shard_size_is_refused_when_the_config_is_read() -> None:
    from bertpre.core.errors import ConfigError

    with pytest.raises(ConfigError, match="max_shard_size: '500 megabytes' is not a size"):
        PrepareConfig(inputs=["x"], max_shard_size="500 megabytes")


def test_an_error_in_a_worker_reading_a_file_is_one_line(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for index, file in enumerate(sorted(shared_path("pretrain/inaugural").glob("*.txt"))[:5]):
        (inputs / f"{index}.txt").write_bytes(file.read_bytes())
    (inputs / "3.txt").write_bytes(b"\x00\x01binary" * 100)
    assert_refused([inputs], tmp_path / "out", match="3.txt: looks like a binary file", num_workers=2)


def test_the_corpus_location_does_not_change_the_split_or_the_pairs(tmp_path: Path) -> None:
    # A cluster node or a colleague's checkout sees the corpus under another path and file name.
    text = english_articles().read_bytes()
    here, there = tmp_path / "here" / "wiki.txt", tmp_path / "elsewhere" / "deeper" / "articles.txt"
    for path in (here, there):
        path.parent.mkdir(parents=True)
        path.write_bytes(text)
    prepare([here], tmp_path / "from-here", max_seq_length=64, eval_fraction=0.2)
    prepare([there], tmp_path / "from-there", max_seq_length=64, eval_fraction=0.2)
    for split in ("train", "eval"):
        assert ((tmp_path / "from-here" / split / "data-00000-of-00001.arrow").read_bytes()
                == (tmp_path / "from-there" / split / "data-00000-of-00001.arrow").read_bytes())


def test_shards_cover_every_document_exactly_once(tmp_path: Path) -> None:
    directory = shared_path("pretrain/inaugural")
    files = sorted(directory.glob("*.txt"))[:9]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for file in files:
        (inputs / file.name).write_bytes(file.read_bytes())
    whole = prepare([inputs], tmp_path / "whole", document_boundary="file", eval_fraction=0)
    shard_docs = 0
    for index in range(3):
        summary = prepare([inputs], tmp_path / "shards" / f"shard-{index}-of-3", document_boundary="file",
                          eval_fraction=0, shard=f"{index}/3")
        shard_docs += summary.documents
        sources = json.loads((tmp_path / "shards" / f"shard-{index}-of-3" / "prepare.json").read_text())
        assert sources["shard"] == f"{index}/3"
    assert whole.documents == shard_docs == 9
    combined = PretrainingData(tmp_path / "shards", "train")
    assert len(combined) == sum(len(PretrainingData(tmp_path / "shards" / f"shard-{i}-of-3")) for i in range(3))


# ---- bad input --------------------------------------------------------------------------------


def assert_refused(inputs: list[Path | str], output: Path, match: str, **overrides: object) -> None:
    with pytest.raises(BertpreError, match=match) as error:
        prepare(inputs, output, **overrides)
    assert "\n" not in str(error.value)
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]


def test_empty_corpus_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert_refused([empty], tmp_path / "out", match="the corpus is empty")


def test_single_document_corpus_says_why(tmp_path: Path) -> None:
    one = tmp_path / "one.txt"
    one.write_text("Only one document here. It has two sentences.\nAnd a third line.\n")
    assert_refused([one], tmp_path / "out", match="only 1 document.*at least two", eval_fraction=0)


def test_missing_text_column_lists_the_columns(tmp_path: Path) -> None:
    data = tmp_path / "docs.jsonl"
    data.write_text(json.dumps({"body": "x", "id": 1}) + "\n")
    assert_refused([data], tmp_path / "out", match=r"docs.jsonl: line 1 has no 'text' column \(columns: body, id\)")


def test_undecodable_bytes_name_the_offset_or_are_replaced_and_counted(tmp_path: Path) -> None:
    docs = [f"Document {i} says something. It has a second sentence too." for i in range(6)]
    raw = "\n\n".join(docs).encode() + b"\n\nBad byte \xff here. Another sentence follows.\n"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(raw)
    offset = raw.index(b"\xff")
    assert_refused([bad], tmp_path / "strict", match=rf"bad.txt: byte offset {offset} is not valid UTF-8")
    with pytest.warns(UserWarning, match="1 lines had undecodable bytes"):
        summary = prepare([bad], tmp_path / "replaced", errors="replace", eval_fraction=0,
                          document_boundary="blank_line")
    assert summary.replaced_lines == 1 and summary.documents == 7


def test_tokenizer_with_mismatched_vocab_txt_is_refused(tmp_path: Path, wiki_10docs: Path) -> None:
    broken = tmp_path / "tok"
    broken.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((REPO / "tokenizer" / name).read_bytes())
    vocab = (REPO / "tokenizer" / "vocab.txt").read_text().split("\n")
    vocab[100], vocab[101] = vocab[101], vocab[100]
    (broken / "vocab.txt").write_text("\n".join(vocab))
    assert_refused([wiki_10docs], tmp_path / "out", match="vocab.txt: does not match", tokenizer=str(broken))


def test_max_seq_length_above_position_embeddings_is_refused(tmp_path: Path, wiki_10docs: Path) -> None:
    assert_refused([wiki_10docs], tmp_path / "out", match="max_seq_length: 1024 exceeds", max_seq_length=1024)


def test_existing_dataset_is_not_overwritten_unless_asked(tmp_path: Path, wiki_10docs: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "prepare.json").write_text("{}")
    with pytest.raises(BertpreError, match="directory is not empty"):
        prepare([wiki_10docs], output)


# ---- other sources ------------------------------------------------------------------------------


def test_reads_gzip_jsonl_parquet_saved_datasets_and_hub_style_local_datasets(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"Article {i} is about topic {i}.\nIt has a second line about topic {i}." for i in range(4)]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    pq.write_table(pa.table({"text": texts}), tmp_path / "b.parquet")
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "saved"))
    hub_dir = tmp_path / "hub_dataset"
    hub_dir.mkdir()
    pq.write_table(pa.table({"text": texts}), hub_dir / "train.parquet")
    sources = [tmp_path / "a.jsonl.gz", tmp_path / "b.parquet", tmp_path / "saved", f"hf:{hub_dir}"]
    for source in sources:
        documents = list(read_documents(CorpusConfig(inputs=[str(source)])))
        assert [d.paragraphs for d in documents] == [t.split("\n") for t in texts], source


def test_builtin_python_docs_is_prose_and_deterministic() -> None:
    config = CorpusConfig(inputs=["builtin:python-docs"], max_documents=50)
    first = list(read_documents(config))
    second = list(read_documents(config))
    assert len(first) == 50 and [d.paragraphs for d in first] == [d.paragraphs for d in second]
    paragraphs = [p for d in first for p in d.paragraphs]
    assert all(">>>" not in p and not p.startswith((" ", ":param")) for p in paragraphs)
    assert np.mean([p[-1] in ".!?:)\"'" for p in paragraphs]) == 1.0


def test_heading_documents_and_deduplication(tmp_path: Path) -> None:
    text = "= First =\n\nSame line.\nUnique one.\n\n = = Section = = \n\nMore text.\n= Second =\nSame line.\nOther.\n"
    path = tmp_path / "wiki.txt"
    path.write_text(text)
    documents = list(read_documents(CorpusConfig(inputs=[str(path)])))
    assert [d.paragraphs for d in documents] == [["Same line.", "Unique one.", "More text."], ["Same line.", "Other."]]
    deduplicated = list(read_documents(CorpusConfig(inputs=[str(path)], deduplicate=True)))
    assert [d.paragraphs for d in deduplicated] == [["Same line.", "Unique one.", "More text."], ["Other."]]

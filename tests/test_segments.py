"""`prepare --examples segments`: MLM-only segments of whole sentences, each of one document, and training on them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from bertpre.core.configs import CorpusConfig, PrepareConfig
from bertpre.core.errors import BertpreError, ConfigError
from bertpre.data.dataset import PretrainingData
from bertpre.data.metadata import read_data_metadata
from bertpre.data.pair_rows import NO_NEXT_SENTENCE_LABEL
from bertpre.data.prepare import prepare_pretraining_data
from bertpre.data.segments import create_segments, document_segment_spans
from bertpre.readers.corpus import read_documents
from bertpre.readers.sentences import split_sentences

from .conftest import REPO, english_articles, pretrain_tiny, shared_path

TOKENIZER = str(REPO / "tokenizer")
CLS, SEP = 2, 3  # the default tokenizer's


def prepare(inputs: list[Path | str], output: Path, **overrides: object):
    options = {"tokenizer": TOKENIZER, "num_workers": 1, "examples": "segments", **overrides}
    config = PrepareConfig(inputs=[str(p) for p in inputs], output=str(output), **options)
    return prepare_pretraining_data(config, show_progress=False)


def speeches(tmp_path: Path, count: int = 12) -> Path:
    """The first inaugural addresses, copied: paragraphs of hard-wrapped prose, a blank line apart."""
    inputs = tmp_path / "speeches"
    inputs.mkdir()
    for file in sorted(shared_path("pretrain/inaugural").glob("*.txt"))[:count]:
        (inputs / file.name).write_bytes(file.read_bytes())
    return inputs


SPEECH_OPTIONS = {"document_boundary": "blank_line", "line_format": "wrapped"}


@pytest.fixture(scope="module")
def wiki_documents() -> list[list[list[int]]]:
    """The ten English articles, sentence-split and tokenized with the default tokenizer, outside `prepare`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    documents = []
    for document in read_documents(CorpusConfig(inputs=[str(english_articles())])):
        sentences = [s for p in document.paragraphs for s in split_sentences(p)]
        ids = tokenizer(sentences, add_special_tokens=False, verbose=False)["input_ids"]
        documents.append([i for i in ids if i])
    return documents


@pytest.fixture(scope="module")
def segments_wiki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ten articles as 64-token segments, every document in the training split."""
    output = tmp_path_factory.mktemp("segments") / "wiki"
    prepare([english_articles()], output, max_seq_length=64, eval_fraction=0)
    return output


# ---- the cut ----------------------------------------------------------------------------------


def test_segments_are_consecutive_greedy_runs_of_whole_sentences_within_the_length() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        max_seq_length = rng.randint(8, 40)
        room = max_seq_length - 2
        lengths = [rng.randint(1, room + 15) for _ in range(rng.randint(0, 12))]
        spans = document_segment_spans(lengths, max_seq_length)
        # in order, without gaps or overlaps, covering every token; never longer than the room
        assert [start for start, _ in spans] == [0, *[end for _, end in spans[:-1]]][:len(spans)]
        assert (spans[-1].end if spans else 0) == sum(lengths)
        assert all(0 < end - start <= room for start, end in spans)
        following = dict(zip(np.cumsum(lengths).tolist(), lengths[1:]))  # a sentence's end → the next one's length
        for start, end in spans[:-1]:
            if end in following:  # cut at a sentence's end: the next sentence did not fit in what was left
                assert end - start + following[end] > room
            else:  # inside a sentence longer than a whole segment: a full segment of it
                assert end - start == room


def test_a_sentence_longer_than_a_segment_is_cut_into_full_ones_and_loses_no_token() -> None:
    document = [[5, 6], list(range(10, 30)), [40, 41, 42]]
    assert create_segments(document, 10) == [[5, 6], list(range(10, 18)), list(range(18, 26)),
                                             [26, 27, 28, 29, 40, 41, 42]]
    assert create_segments([[7] * 8, [8] * 8], 10) == [[7] * 8, [8] * 8]  # exactly full: no empty segment
    assert create_segments([], 10) == []


# ---- prepare: the saved dataset --------------------------------------------------------------


def test_each_document_is_its_segments_end_to_end_and_nothing_else(segments_wiki: Path, wiki_documents) -> None:
    data = PretrainingData(segments_wiki, "train")
    documents = data.table.column("document").to_numpy()
    assert np.array_equal(documents, data.table.column("b_document").to_numpy())  # nothing from another document
    assert np.all(np.diff(documents) >= 0)  # a document's segments together, in order
    assert set(data.table.column("next_sentence_label").to_numpy().tolist()) == {NO_NEXT_SENTENCE_LABEL}
    text: dict[int, list[int]] = {}
    for index in range(len(data)):
        example = data.example(index)
        ids = example["input_ids"].tolist()
        assert len(ids) <= 64 and ids[0] == CLS and ids[-1] == SEP and CLS not in ids[1:] and SEP not in ids[:-1]
        assert not example["token_type_ids"].any()
        text.setdefault(int(documents[index]), []).extend(ids[1:-1])
    assert len(text) == len(wiki_documents) == 10
    for index, sentences in enumerate(wiki_documents):
        assert text[index] == [token for sentence in sentences for token in sentence], index
    lengths = data.lengths()
    # long articles: filled up to the sentence that no longer fits (sentences of ~25 tokens leave ~12 of 64 free)
    assert np.mean(lengths) > 0.75 * 64


def test_the_summary_and_metadata_name_segments(tmp_path: Path) -> None:
    summary = prepare([speeches(tmp_path)], tmp_path / "out", eval_fraction=0.2, **SPEECH_OPTIONS)
    table = summary.table()
    assert f"segments         {summary.train_pairs + summary.eval_pairs:,}" in table
    assert "IsNext" not in table and "segment length (tokens incl. specials):" in table
    assert "padding at 128" in table and "in segments" in table
    record = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert record["examples"] == "segments"
    assert record["summary"]["train_segments"] == summary.train_pairs > 0
    assert record["summary"]["eval_segments"] == summary.eval_pairs > 0
    assert "train_pairs" not in record["summary"] and "is_next_ratio" not in record["summary"]
    assert sum(record["summary"]["length_histogram"].values()) == summary.train_pairs + summary.eval_pairs
    metadata = read_data_metadata(tmp_path / "out")
    assert metadata.examples == "segments" and metadata.shards[0].rows("eval") == summary.eval_pairs
    assert len(PretrainingData(tmp_path / "out", "eval")) == summary.eval_pairs
    assert "segments" in json.loads((tmp_path / "out" / "train" / "dataset_info.json").read_text())["description"]


def test_one_and_two_workers_give_the_same_bytes(tmp_path: Path) -> None:
    inputs = speeches(tmp_path)
    for workers in (1, 2):
        prepare([inputs], tmp_path / str(workers), num_workers=workers, eval_fraction=0.2, **SPEECH_OPTIONS)
    files = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*")
                   if p.is_file() and p.name not in ("prepare.json", "prepare.yaml"))
    assert any(f.parts[0] == "eval" for f in files) and any(f.parts[0] == "train" for f in files)
    assert [(tmp_path / "1" / f).read_bytes() for f in files] == [(tmp_path / "2" / f).read_bytes() for f in files]


def test_shards_read_as_one_dataset_and_shards_of_pairs_do_not_mix_in(tmp_path: Path) -> None:
    inputs = speeches(tmp_path, count=6)
    whole = prepare([inputs], tmp_path / "whole", eval_fraction=0, document_boundary="file")
    for index in range(3):
        prepare([inputs], tmp_path / "shards" / f"shard-{index}-of-3", eval_fraction=0, document_boundary="file",
                shard=f"{index}/3")
    combined = PretrainingData(tmp_path / "shards", "train")
    assert len(combined) == whole.train_pairs  # a document's segments do not depend on the others
    assert sorted(combined.lengths().tolist()) == sorted(PretrainingData(tmp_path / "whole").lengths().tolist())
    prepare([inputs], tmp_path / "shards" / "shard-of-pairs", examples="pairs", eval_fraction=0,
            document_boundary="file", shard="0/3")
    with pytest.raises(BertpreError, match="prepared as .* prepare every shard with the same --examples"):
        read_data_metadata(tmp_path / "shards")


def test_decontamination_drops_documents_from_segments_too(tmp_path: Path) -> None:
    from .test_decontamination import prepare_reviews, prepared_text

    dev = shared_path("ci/sst2_dev_first200.tsv")
    cleaned = prepare_reviews(tmp_path, "clean", decontaminate=[str(dev)], examples="segments", num_workers=2)
    assert cleaned.documents == 4 and cleaned.decontamination["dropped_documents"] == 2
    assert "austere" not in prepared_text(tmp_path / "clean")


def test_a_single_document_makes_segments(tmp_path: Path) -> None:
    # pairs refuse it (a random next segment needs another document); segments need none
    one = tmp_path / "one.txt"
    one.write_text("Only one document here. It has two sentences.\nAnd a third line.\n")
    summary = prepare([one], tmp_path / "out", document_boundary="file")
    assert summary.documents == 1 and summary.train_pairs == 1


def test_a_second_pass_over_segments_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="dupe_factor: 2 with examples segments would only repeat them") as error:
        PrepareConfig(inputs=["x"], examples="segments", dupe_factor=2)
    assert "\n" not in str(error.value)


# ---- pairs stay the default and as they were ---------------------------------------------------


def test_pairs_stay_the_default(tmp_path: Path) -> None:
    # tests/test_data.py pins the bytes of the default's Arrow files; this says what the default is
    assert PrepareConfig().examples == "pairs"
    prepare_pretraining_data(PrepareConfig(inputs=[str(english_articles())], output=str(tmp_path / "out"),
                                           tokenizer=TOKENIZER, max_seq_length=64, num_workers=1), show_progress=False)
    record = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert record["examples"] == "pairs" and "train_pairs" in record["summary"] and "is_next_ratio" in record["summary"]
    data = PretrainingData(tmp_path / "out")
    assert set(data.table.column("next_sentence_label").to_numpy().tolist()) == {0, 1}
    assert data.table.column("token_type_ids").combine_chunks().values.to_numpy().any()


def test_data_prepared_before_segments_existed_reads_as_pairs_with_the_fingerprint_it_had(
        wiki64_with_eval: Path, segments_wiki: Path, tmp_path: Path) -> None:
    import shutil

    from bertpre.data.metadata import data_fingerprint

    old = Path(shutil.copytree(wiki64_with_eval, tmp_path / "old"))
    record = json.loads((old / "prepare.json").read_text())
    del record["examples"]  # as bertpre wrote it before
    (old / "prepare.json").write_text(json.dumps(record))
    assert read_data_metadata(old).examples == "pairs"
    assert len(PretrainingData(old, "eval")) == record["summary"]["eval_pairs"]
    assert data_fingerprint(read_data_metadata(old)) == data_fingerprint(read_data_metadata(wiki64_with_eval))
    relabelled = Path(shutil.copytree(segments_wiki, tmp_path / "relabelled"))
    record = json.loads((relabelled / "prepare.json").read_text())
    record["examples"] = "pairs"
    (relabelled / "prepare.json").write_text(json.dumps(record))
    assert data_fingerprint(read_data_metadata(relabelled)) != data_fingerprint(read_data_metadata(segments_wiki))


# ---- pretraining on segments ------------------------------------------------------------------


def test_pretraining_with_next_sentence_prediction_on_segments_is_refused_in_one_line(segments_wiki: Path,
                                                                                     tmp_path: Path) -> None:
    with pytest.raises(BertpreError, match="--objective mlm") as error:
        pretrain_tiny(segments_wiki, tmp_path / "run", max_steps="1")  # the default objective, mlm_nsp
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{segments_wiki}: prepared as MLM-only segments")
    assert not (tmp_path / "run").exists()


def test_a_packed_masked_lm_run_trains_on_segments(tmp_path: Path) -> None:
    from .test_packing import run

    data = prepare([speeches(tmp_path)], tmp_path / "data", eval_fraction=0.1, **SPEECH_OPTIONS)
    assert data.padding_fraction > 0.3  # paragraphs are shorter than 128 tokens: what packing is for
    result = run(tmp_path / "data", tmp_path / "run", objective="mlm", max_steps="3", schedule_steps="3")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert len(steps) == 3 and all(np.isfinite(line["loss"]) for line in steps)
    assert np.mean([line["padding_fraction"] for line in steps]) < data.padding_fraction / 2  # ~10% against 31%
    assert result.tokens_seen > 0.8 * 3 * 8 * 128  # 3 steps of 8 rows of 128 slots, mostly real tokens

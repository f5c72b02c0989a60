"""Decontamination: the 13-word index against a slow exact search, normalisation of raw and tokenized text,
reading evaluation tables, and `prepare --decontaminate` dropping documents and saying so."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bertpre.core.errors import BertpreError
from bertpre.data.decontamination import MIN_WORDS, NGRAM, ContaminationFilter, normalized_words

from .conftest import REPO, shared_path


def test_raw_and_penn_treebank_tokenized_copies_give_the_same_words() -> None:
    pairs = [("it 's a charming and often affecting journey . ", "It's a charming and often-affecting journey!"),
             ("the film does n't work , and ca n't -lrb- wo n't -rrb- try", "The film doesn't work; and can't (won't) try"),
             ("the production 's austere locales", "The production\u2019s AUSTERE locales..."),
             ("a cafe , naive and 1,000 times", "A café, naïve and 1 000 times")]
    for tokenized, raw in pairs:
        assert normalized_words(tokenized) == normalized_words(raw), (tokenized, raw)
    assert normalized_words("It's") == ["its"] and normalized_words("rock'n'roll") == ["rocknroll"]


def slow_contaminated(document: str, texts: list[str]) -> bool:
    """The definition, word tuple by word tuple: a sequence of min(13, its length) words of a text of 8 or more."""
    words = normalized_words(document)
    for text in texts:
        sequence = normalized_words(text)
        if len(sequence) < MIN_WORDS:
            continue
        length = min(NGRAM, len(sequence))
        grams = {tuple(sequence[i:i + length]) for i in range(len(sequence) - length + 1)}
        if any(tuple(words[i:i + length]) in grams for i in range(len(words) - length + 1)):
            return True
    return False


def test_the_index_finds_exactly_the_documents_the_slow_search_finds(tmp_path: Path) -> None:
    generator = random.Random(0)
    vocabulary = [f"w{i}" for i in range(12)]  # few words: many near misses by chance
    texts = [" ".join(generator.choices(vocabulary, k=generator.randint(3, 24))) for _ in range(40)]
    documents = []
    for i in range(300):
        words = generator.choices(vocabulary, k=generator.randint(20, 80))
        text = normalized_words(generator.choice(texts))
        cut = generator.choice([len(text), min(len(text), NGRAM), min(len(text), NGRAM) - 1, MIN_WORDS - 1])
        start = generator.randint(0, max(0, len(text) - cut))
        if i % 3 == 0:  # a whole sequence, or one word short of one, inserted with other punctuation and case
            words[10:10] = [w.upper() + generator.choice(["", ",", "."]) for w in text[start:start + cut]]
        documents.append(" ".join(words))
    table = tmp_path / "eval.jsonl"
    table.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(texts)))
    index = ContaminationFilter.from_files([str(table)])
    found = [bool(index.matching_files(document)[0]) for document in documents]
    expected = [slow_contaminated(document, texts) for document in documents]
    assert found == expected
    assert 20 < sum(expected) < 280  # both kinds are well represented


def test_every_string_cell_of_a_table_is_indexed_a_first_row_without_header_too(tmp_path: Path) -> None:
    sentence = "the sailors rode the breeze clear of the rocks and home again"
    cola = tmp_path / "cola.tsv"  # no header row: its first row is read as one, and must still be indexed
    cola.write_text(f"gj04\t1\t\t{sentence}\ngj04\t0\t*\tthe weights made the rope stretch over the pulley\n")
    nested = tmp_path / "pairs.jsonl"
    nested.write_text(json.dumps({"id": 3, "pair": {"premise": "x y", "hypotheses": [sentence.upper()]}}) + "\n")
    index = ContaminationFilter.from_files([str(cola), str(nested)])
    assert index.matching_files(f"Yesterday {sentence}, they said.")[0] == [0, 1]
    assert index.matching_files("The weights made the rope stretch over the pulley!")[0] == [0]  # 10 words, whole
    assert index.matching_files("the weights made the rope stretch over the")[0] == []
    assert [(f.texts, f.too_short) for f in index.files] == [(2, 0), (1, 0)]  # ids, labels and "x y" are no texts
    empty = tmp_path / "labels.csv"
    empty.write_text("label,score\n1,0.5\n0,0.1\n")
    with pytest.raises(BertpreError, match=r"labels.csv has no text of 8 words or more"):
        ContaminationFilter.from_files([str(empty)])


def sst2_rows() -> list[str]:
    return [line.split("\t")[0] for line in shared_path("ci/sst2_dev_first200.tsv").read_text().splitlines()[1:]]


def documents_with_sst2_sentences() -> list[str]:
    """Six reviews; two quote SST-2 dev sentences in raw form, one quotes only 12 words of one."""
    rows = sst2_rows()
    filler = ["The plot moves along at a steady pace.", "Some of the scenes run long.",
              "The cast does what it can with the script.", "Still, the ending lands well enough.",
              "I would watch it again on a rainy day.", "The music is forgettable but pleasant."]
    quoted = {1: "It's a cookie-cutter movie, a cut-and-paste job!",  # row 28: ten words, matched whole
              3: "The acting, costumes, music, cinematography and sound are all astounding given the "
                 "production's austere locales.",  # row 3, with the clitic joined back
              5: " ".join(rows[2].split()[:12]) + "."}  # twelve words of row 2: below 13, kept
    return [" ".join(filler[i:] + filler[:i]) + " " + quoted.get(i, "") for i in range(6)]


def prepare_reviews(tmp_path: Path, name: str, **options: object):
    from bertpre.core.configs import PrepareConfig
    from bertpre.data.prepare import prepare_pretraining_data

    corpus = tmp_path / "reviews.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in documents_with_sst2_sentences()))
    config = PrepareConfig(inputs=[str(corpus)], output=str(tmp_path / name), tokenizer=str(REPO / "tokenizer"),
                           max_seq_length=32, eval_fraction=0.0, **{"num_workers": 1, **options})
    return prepare_pretraining_data(config, show_progress=False)


def prepared_text(directory: Path) -> str:
    from transformers import AutoTokenizer

    from bertpre.data.dataset import PretrainingData

    data = PretrainingData(str(directory), "train")
    tokenizer = AutoTokenizer.from_pretrained(REPO / "tokenizer")
    return " ".join(tokenizer.decode(data.example(i)["input_ids"]) for i in range(len(data)))


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_drops_the_documents_that_quote_an_evaluation_text_and_says_how_many_from_which_file(
        tmp_path: Path, workers: int) -> None:
    dev = shared_path("ci/sst2_dev_first200.tsv")
    plain = prepare_reviews(tmp_path, "plain", num_workers=workers)
    cleaned = prepare_reviews(tmp_path, "clean", decontaminate=[str(dev)], num_workers=workers)
    assert plain.documents == 6 and cleaned.documents == 4
    assert "austere" in prepared_text(tmp_path / "plain") and "austere" not in prepared_text(tmp_path / "clean")
    report = json.loads((tmp_path / "clean" / "prepare.json").read_text())["summary"]["decontamination"]
    assert report["dropped_documents"] == 2 and report["documents"] == 6 and report["ngram"] == 13
    assert [(Path(f["path"]).name, f["dropped_documents"]) for f in report["files"]] == [("sst2_dev_first200.tsv", 2)]
    assert 0 < report["dropped_words"] < report["words"]
    table = cleaned.table()
    assert "decontaminated   2 of 6 documents dropped" in table and "sst2_dev_first200.tsv: 2 documents" in table
    assert "decontaminated" not in plain.table()


def test_an_unreadable_evaluation_file_is_refused_before_the_corpus_is_read(tmp_path: Path) -> None:
    with pytest.raises(BertpreError, match=r"missing.tsv: no such file"):
        prepare_reviews(tmp_path, "out", decontaminate=[str(tmp_path / "missing.tsv")])
    assert not (tmp_path / "out").exists()

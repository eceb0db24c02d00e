"""The readers on real files nobody here wrote (../shared/data/foreign, read as published), on
small files with one quirk each, and on files saved by the tools users have, old releases too
(tests/fixtures/readers, made by make_readers.py there).

Every count is the one in the dataset's README / PROVENANCE.md, and every text is compared with
an independent reading: Python's csv module with the file's dialect, or plain line splitting.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shlex
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lorafit.config import DataConfig
from lorafit.data import load_splits, load_table
from lorafit.errors import UserError

from .conftest import ROOT

FOREIGN = Path(os.environ.get("LORAFIT_SHARED_DATA") or ROOT.parent / "shared") / "data" / "foreign"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "readers"


@pytest.fixture(scope="module")
def foreign() -> Path:
    if not (FOREIGN / "README.md").exists():
        pytest.fail(f"{FOREIGN} is missing: the tests need ../shared beside the checkout")
    return FOREIGN


def tsv_rows(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    """A file's lines split at tabs: the reading of a file whose " are characters."""
    return [line.split("\t") for line in path.read_text(encoding=encoding).rstrip("\n").split("\n")]


def counts(table) -> list[int]:
    return np.bincount(table.labels).tolist()


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- SMS Spam Collection


def test_sms_spam_read_as_published_with_nothing_configured(foreign, caplog):
    """No extension, no header, no column, class or quoting config: columns guessed, and the
    `"` that open 54 messages read as characters, with a warning naming the first."""
    path = foreign / "sms_spam" / "SMSSpamCollection"
    cfg = DataConfig(train=str(path))
    with caplog.at_level(logging.INFO, logger="lorafit"):
        splits = load_splits(cfg, seed=0)
    assert "text column '1', label column '0' (guessed from the columns 0, 1" in caplog.text
    assert re.search(
        r"SMSSpamCollection: row 283 \(line 283\): a \" is a character here, not a CSV quote: read with "
        r"data.quoting: none, 5574 rows \(as CSV quotes: 5572 rows, fields changed\)",
        caplog.text,
    )
    assert (cfg.text_column, cfg.label_column, cfg.label_names) == ("1", "0", ["ham", "spam"])
    assert len(splits["train"]) + len(splits["validation"]) == 5574
    rows = tsv_rows(path)
    assert (
        not path.read_bytes().endswith(b"\n") and len(rows) == 5574
    )  # the last line has no newline
    assert rows[282][1].startswith('"Wen u miss someone')
    for quoting in ("auto", "none"):
        table = load_table(str(path), DataConfig(quoting=quoting))
        assert counts(table) == [4827, 747]
        assert table.texts == [text for _, text in rows]
        assert table.labels.tolist() == [["ham", "spam"].index(label) for label, _ in rows]
    assert table.texts[5081].startswith('"') and "&lt;#&gt;" in " ".join(table.texts)


# ---------------------------------------------------------------- GLUE


RTE_PAIR = {"quoting": "none", "text_column": ["sentence1", "sentence2"], "label_column": "label"}


@pytest.mark.parametrize(
    "name, rows, classes",
    [
        ("train.tsv", 2490, [1249, 1241]),
        ("train_copy.tsv", 2490, [1249, 1241]),
        ("dev.tsv", 277, [146, 131]),
    ],
)
def test_rte_pairs_with_quoting_none(foreign, name, rows, classes):
    path = foreign / "glue_rte" / name
    table = load_table(
        str(path), DataConfig(**RTE_PAIR, label_names=["entailment", "not_entailment"])
    )
    header, *body = list(
        csv.reader(
            io.StringIO(path.read_text(), newline=""), dialect="excel-tab", quoting=csv.QUOTE_NONE
        )
    )
    assert header == ["index", "sentence1", "sentence2", "label"]
    assert len(table) == len(body) == rows and counts(table) == classes
    assert table.texts == [r[1] for r in body] and table.pairs == [r[2] for r in body]
    if name == "train_copy.tsv":  # the row whose sentence1 starts with a "
        assert table.texts[2164].startswith("\"That film wasn't too successful,")


def test_rte_splits_train_and_dev(foreign):
    cfg = DataConfig(
        train=str(foreign / "glue_rte" / "train_copy.tsv"),
        validation=str(foreign / "glue_rte" / "dev.tsv"),
        **RTE_PAIR,
    )
    splits = load_splits(cfg, seed=0)
    assert (len(splits["train"]), len(splits["validation"])) == (2490, 277)
    assert cfg.label_names == ["entailment", "not_entailment"]
    test = load_table(str(foreign / "glue_rte" / "test.tsv"), cfg, need_labels=False)
    assert len(test) == 3000 and test.labels is None and test.pairs is not None


@pytest.mark.parametrize(
    "name, row, line", [("train.tsv", 51, 52), ("train_copy.tsv", 51, 52), ("dev.tsv", 24, 25)]
)
def test_rte_without_quoting_none_is_never_read_altered(foreign, caplog, name, row, line):
    """CSV quoting would read 2,490 rows but strip the quotes of 70 (a row count alone cannot
    tell): the file is read as with quoting none, the warning naming the first such row."""
    path = foreign / "glue_rte" / name
    with caplog.at_level(logging.WARNING, logger="lorafit"):
        table = load_table(str(path), DataConfig(text_column=["sentence1", "sentence2"]))
    assert (
        f'{name}: row {row} (line {line}): a " is a character here, not a CSV quote: read with data.quoting: none'
        in caplog.text
    )
    assert "set data.quoting: none to say so" in caplog.text
    fields = tsv_rows(path)[line - 1]
    assert fields[0] == str(row - 1) and any(f.startswith('"') for f in fields[1:3])
    body = tsv_rows(path)[1:]
    assert table.texts == [r[1] for r in body] and table.pairs == [r[2] for r in body]


def test_stsb_is_read_whole_with_or_without_quoting_none(foreign, caplog):
    """CSV quoting reads 5,711 records from STS-B's 5,750 lines; read as published: 5,749 rows."""
    path = foreign / "glue_stsb" / "train.tsv"
    body = tsv_rows(path)[1:]
    for quoting in ("none", "auto"):
        with caplog.at_level(logging.WARNING, logger="lorafit"):
            table = load_table(
                str(path),
                DataConfig(
                    quoting=quoting, text_column=["sentence1", "sentence2"], label_column="genre"
                ),
            )
        assert (
            len(table) == 5749
            and table.texts == [r[7] for r in body]
            and table.pairs == [r[8] for r in body]
        )
        assert dict(zip(["main-captions", "main-forum", "main-news"], counts(table))) == {
            "main-news": 3299,
            "main-captions": 2000,
            "main-forum": 450,
        }
    assert (
        'train.tsv: row 2002 (line 2003): a " is a character here' in caplog.text
        and "(as CSV quotes: 5711 rows" in caplog.text
    )


COLA = {
    "columns": ["source", "label", "mark", "sentence"],
    "text_column": "sentence",
    "label_column": "label",
}


@pytest.mark.parametrize(
    "name, rows, classes",
    [
        ("in_domain_train.tsv", 8551, [2528, 6023]),
        ("out_of_domain_dev.tsv", 516, [162, 354]),
        ("amrnag_glue_copy/dev.tsv", 1043, [322, 721]),
    ],
)
def test_cola_headerless_with_named_columns(foreign, name, rows, classes):
    path = foreign / "glue_cola" / name
    table = load_table(str(path), DataConfig(**COLA))
    lines = tsv_rows(path)
    assert len(table) == len(lines) == rows and counts(table) == classes
    assert table.texts == [r[3] for r in lines]
    assert table.labels.tolist() == [int(r[1]) for r in lines]
    assert table.texts[-1] == lines[-1][3] and lines[-1][3]  # the last row, without a final newline
    assert Counter(r[2] for r in lines)[""] > rows / 2  # the empty third column


def test_cola_with_the_wrong_column_count_is_refused(foreign):
    path = foreign / "glue_cola" / "in_domain_dev.tsv"
    with pytest.raises(UserError) as e:
        load_table(
            str(path),
            DataConfig(
                columns=["source", "label", "sentence"],
                text_column="sentence",
                label_column="label",
            ),
        )
    assert one_line(e) == (
        f"{path}: data.columns names 3 columns (source, label, sentence) but the rows have 4; name every column, in order"
    )


def test_sst2_dev_keeps_the_trailing_space(foreign):
    path = foreign / "glue_sst2" / "dev.tsv"
    table = load_table(str(path), DataConfig())  # header `sentence label`: columns guessed
    header, *body = list(csv.reader(io.StringIO(path.read_text(), newline=""), dialect="excel-tab"))
    assert header == ["sentence", "label"]
    assert len(table) == 872 and counts(table) == [428, 444]
    assert table.texts == [r[0] for r in body] and all(t.endswith(" ") for t in table.texts)
    assert table.texts[0] == "it 's a charming and often affecting journey . "


def test_goemotions_quotes_are_csv_quotes_and_read_as_such(foreign):
    """GoEmotions quotes a text that holds a " and doubles it inside (as pandas writes): CSV
    quoting reads those 137 dev rows right; a " read as a character would leave them doubled."""
    path = foreign / "goemotions" / "dev.tsv"
    table = load_table(str(path), DataConfig(text_column="0", label_column="1"))
    rows = list(
        csv.reader(io.StringIO(path.read_text(), newline=""), dialect="excel-tab", strict=True)
    )
    assert len(table) == len(rows) == 5426
    assert table.texts == [r[0] for r in rows]
    quoted = [
        (line[0], t) for line, t in zip(tsv_rows(path), table.texts) if line[0].startswith('"')
    ]
    assert len(quoted) == 137
    assert all(t == raw[1:-1].replace('""', '"') for raw, t in quoted)


# ---------------------------------------------------------------- TREC


def convert_trec(source: Path, out: Path) -> Path:
    """Run the one-line conversion given in the readers' docstring (`LC_ALL=C sed ... SOURCE >
    OUT`) on a published file."""
    import lorafit.data.readers as readers

    (line,) = [
        x.strip() for x in readers.__doc__.splitlines() if x.strip().startswith("LC_ALL=C sed")
    ]
    command, target = line.split(" > ")
    env, *argv = shlex.split(command)
    assert env == "LC_ALL=C" and target == "trec_train.tsv"
    argv[-1] = str(source)
    out.write_bytes(
        subprocess.run(
            argv, check=True, capture_output=True, env={**os.environ, "LC_ALL": "C"}
        ).stdout
    )
    return out


COARSE = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
TREC = {"columns": ["label", "text"], "encoding": "latin-1"}  # as configs/trec.yaml reads it


@pytest.mark.parametrize(
    "name, rows, classes",
    [
        ("train_5500.label.txt", 5452, [86, 1162, 1250, 1223, 835, 896]),
        ("TREC_10.label", 500, [9, 138, 94, 65, 81, 113]),
    ],
)
def test_trec_converted_by_the_documented_line(foreign, tmp_path, name, rows, classes):
    source = foreign / "trec" / name
    converted = convert_trec(source, tmp_path / "trec.tsv")
    cfg = DataConfig(train=str(converted), **TREC)
    table = load_table(str(converted), cfg)
    lines = source.read_bytes().decode("latin-1").rstrip("\n").split("\n")
    assert len(table) == len(lines) == rows and counts(table) == classes
    assert table.texts == [line.split(" ", 1)[1] for line in lines]
    assert table.labels.tolist() == [COARSE.index(line.split(":")[0]) for line in lines]
    if name.startswith("train"):
        assert (
            table.texts[65]
            == "Which city has the oldest relationship as a sister\u00f0city with Los Angeles ?"
        )
        assert (
            table.texts[79] == "What country did the Nazis occupy for 1 , CD NNS IN NNP NNP NNP ."
        )  # junk, kept
        splits = load_splits(cfg, seed=0)
        assert (
            cfg.label_names == COARSE and len(splits["train"]) + len(splits["validation"]) == rows
        )


def test_trec_needs_the_encoding_and_names_line_and_byte(foreign, tmp_path):
    raw = foreign / "trec" / "train_5500.label.txt"
    data = raw.read_bytes()
    offset = data.index(b"\xf0")
    assert data.count(b"\xf0") == 1 and data[:offset].count(b"\n") + 1 == 66
    with pytest.raises(UserError) as e:
        load_table(str(raw), DataConfig())
    assert one_line(e) == (
        f"{raw}: line 66 (byte offset {offset}): byte 0xf0 is not utf-8 text; set data.encoding to the "
        "file's encoding (e.g. latin-1 or cp1252) or re-save it as UTF-8"
    )
    converted = convert_trec(raw, tmp_path / "trec.tsv")  # the conversion keeps the byte
    shifted = converted.read_bytes().index(b"\xf0")
    assert shifted == offset - sum(
        len(x.split(b" ")[0]) - len(x.split(b":")[0]) for x in data[:offset].split(b"\n")
    )
    with pytest.raises(
        UserError,
        match=rf"trec.tsv: line 66 \(byte offset {shifted}\): byte 0xf0 is not utf-8 text",
    ):
        load_table(str(converted), DataConfig(columns=["label", "text"]))
    with pytest.raises(UserError, match="cannot tell the separator"):  # the raw lines, unconverted
        load_table(str(raw), DataConfig(encoding="latin-1"))


# ---------------------------------------------------------------- one quirk each


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


ROWS = [
    ("a first text of some length", "pos"),
    ("the second text, with a comma", "neg"),
    ("third", "pos"),
]
PLAIN = "text,label\n" + "".join(f'"{t}",{y}\n' if "," in t else f"{t},{y}\n" for t, y in ROWS)


def assert_rows(table, rows=ROWS):
    assert table.texts == [t for t, _ in rows]
    assert table.labels.tolist() == [sorted({y for _, y in rows}).index(y) for _, y in rows]


@pytest.mark.parametrize(
    "name, content",
    [
        ("bom.csv", b"\xef\xbb\xbf" + PLAIN.encode()),
        ("crlf.csv", PLAIN.replace("\n", "\r\n")),
        ("bom-crlf.csv", b"\xef\xbb\xbf" + PLAIN.replace("\n", "\r\n").encode()),
        (
            "semicolon.csv",
            PLAIN.replace(",", ";").replace(
                '"the second text; with a comma"', "the second text, with a comma"
            ),
        ),
        (
            "pipe.txt",
            PLAIN.replace(",", "|").replace(
                '"the second text| with a comma"', "the second text, with a comma"
            ),
        ),
        (
            "tab.txt",
            PLAIN.replace(",", "\t").replace(
                '"the second text\t with a comma"', "the second text, with a comma"
            ),
        ),
        (
            "no-extension",
            PLAIN.replace(",", "\t").replace(
                '"the second text\t with a comma"', "the second text, with a comma"
            ),
        ),
        ("lines.jsonl", "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS)),
        ("array.json", json.dumps([{"text": t, "label": y} for t, y in ROWS], indent=1)),
        ("lines.json", "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS)),
        ("array-no-extension", json.dumps([{"text": t, "label": y} for t, y in ROWS])),
        (
            "bom-array.json",
            b"\xef\xbb\xbf" + json.dumps([{"text": t, "label": y} for t, y in ROWS]).encode(),
        ),
        (
            "bom-lines.jsonl",
            b"\xef\xbb\xbf"
            + "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS).encode(),
        ),
    ],
)
def test_one_quirk_each_reads_the_same_rows(tmp_path, name, content):
    path = write(tmp_path, name, content)
    assert_rows(load_table(path, DataConfig()))  # columns guessed
    assert_rows(
        load_table(path, DataConfig(text_column="text", label_column="label"))
    )  # named exactly


def test_a_quoted_field_with_line_breaks_is_one_row_and_keeps_them(tmp_path):
    content = 'label,text\npos,"Great product, really.\nWould buy again"\nneg,"bad, bad"\npos,"windows\r\nline"\n'
    table = load_table(write(tmp_path, "reviews.csv", content), DataConfig())
    assert table.texts == ["Great product, really.\nWould buy again", "bad, bad", "windows\r\nline"]
    assert table.labels.tolist() == [1, 0, 1]


QUOTES = [
    # a stray quote swallows whole lines, every one a complete row of 2 fields
    (
        'text\tlabel\n"a stray quote\tpos\nnext text"\tneg\nthird\tpos\n',
        r"row 1: a quote opens a field that swallows whole lines \(2 rows read from 3 lines of 2 fields each\)",
    ),
    (
        'text\tlabel\n"Yes!" he said\tpos\nno\tneg\n',
        r"row 1 \(line 2\): a \" closes a quoted field and text follows it \('\"Yes!\" he said",
    ),
    (
        'text\tlabel\nfine\tpos\n"never closed\tneg\nmore\tpos\n',
        r"row 2 \(line 3\): a \" opened here is never closed",
    ),
]


@pytest.mark.parametrize("content, message", QUOTES)
def test_quotes_that_are_characters_in_a_csv_are_refused_with_the_fix(tmp_path, content, message):
    path = write(tmp_path, "quotes.csv", content.replace("\t", ","))
    with pytest.raises(UserError) as e:
        load_table(path, DataConfig())
    assert re.search(message.replace("\\t", ","), one_line(e)) and "set data.quoting: none" in str(
        e.value
    )
    table = load_table(path, DataConfig(quoting="none"))
    assert table.texts == [
        line.split(",")[0] for line in content.replace("\t", ",").splitlines()[1:]
    ]


@pytest.mark.parametrize("content, message", QUOTES)
def test_quotes_that_are_characters_in_a_tsv_are_read_as_such_with_a_warning(
    tmp_path, caplog, content, message
):
    path = write(tmp_path, "quotes.tsv", content)
    with caplog.at_level(logging.WARNING, logger="lorafit"):
        table = load_table(path, DataConfig())
    assert table.texts == [line.split("\t")[0] for line in content.splitlines()[1:]]
    assert 'a " is a character here, not a CSV quote: read with data.quoting: none' in caplog.text
    assert re.search(message.split(":")[0], caplog.text)  # the row named


def test_a_tsv_written_with_csv_quotes_is_never_read_as_characters(tmp_path):
    """A file that doubles a quote inside a quoted field was written by a CSV writer: one bad
    quote in it is refused, not read with the other fields' quotes kept."""
    content = 'text\tlabel\n"He said ""hi"""\tpos\n"Yes," he said\tneg\n'
    with pytest.raises(UserError, match=r"row 2 \(line 3\): a \" closes a quoted field"):
        load_table(write(tmp_path, "written.tsv", content), DataConfig())


@pytest.mark.parametrize(
    "content, columns, texts",
    [
        # no header: a short first text, and `ham` again below (the old check took it for a header)
        (
            "ham,Ok lar... Joking wif u oni...\nham,Free entry in 2 a wkly comp to win FA Cup final tkts 21st May\nspam,Nah I dont think he goes\n",
            ["0", "1"],
            [
                "Ok lar... Joking wif u oni...",
                "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May",
                "Nah I dont think he goes",
            ],
        ),
        ("1,a first text\n0,another one\n", ["0", "1"], ["a first text", "another one"]),
        # a header: short rows, string labels; one row; integer labels
        (
            "sentence,label\ngood movie,pos\nbad film,neg\nfine,pos\n",
            ["sentence", "label"],
            ["good movie", "bad film", "fine"],
        ),
        ("sentence,label\ngood movie,pos\n", ["sentence", "label"], ["good movie"]),
        ("label,body\n1,hello there\n0,bye now\n", ["label", "body"], ["hello there", "bye now"]),
    ],
)
def test_a_header_row_is_detected_or_not(tmp_path, content, columns, texts):
    label, text = (
        (columns[0], columns[1]) if columns[0] in ("0", "label") else (columns[1], columns[0])
    )
    table = load_table(
        write(tmp_path, "rows.csv", content), DataConfig(text_column=text, label_column=label)
    )
    assert table.texts == texts


def test_a_header_with_an_empty_name_is_refused(tmp_path):
    """A spreadsheet's export with a trailing empty column: a header still, named in the error."""
    with pytest.raises(
        UserError, match="unnamed.csv: a header column is empty; name every column in row 1"
    ):
        load_table(write(tmp_path, "unnamed.csv", "text,label,\nhello there,1,\n"), DataConfig())


def test_data_columns_names_a_headerless_file_and_a_header_that_says_the_same(tmp_path):
    cfg = DataConfig(columns=["y", "body"], text_column="body", label_column="y")
    assert load_table(write(tmp_path, "a.csv", "pos,a first text\nneg,another\n"), cfg).texts == [
        "a first text",
        "another",
    ]
    assert load_table(
        write(tmp_path, "b.csv", "y,body\npos,a first text\nneg,another\n"), cfg
    ).texts == ["a first text", "another"]
    with pytest.raises(
        UserError, match=r"c.csv: data.columns names 2 columns \(y, body\) but the rows have 3"
    ):
        load_table(write(tmp_path, "c.csv", "pos,a first text,x\nneg,another,y\n"), cfg)


def test_a_bad_byte_after_a_bom_is_named_by_its_offset_in_the_file(tmp_path):
    data = b"\xef\xbb\xbftext,label\ncaf\xe9 news,1\n"
    offset = data.index(0xE9)  # 3 + 15: the BOM counts
    with pytest.raises(UserError, match=rf"line 2 \(byte offset {offset}\): byte 0xe9"):
        load_table(write(tmp_path, "bom-latin1.csv", data), DataConfig())


def test_saved_datasets_and_the_split_asked_for(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_dict(
        {
            "sentence": [t for t, _ in ROWS],
            "label": [y for _, y in ROWS],
            "input_ids": [[1, 2], [3], [4, 5, 6]],
        }
    )
    ds.save_to_disk(str(tmp_path / "one"))
    assert_rows(
        load_table(str(tmp_path / "one"), DataConfig())
    )  # the list column is neither text nor label
    DatasetDict({"train": ds.select([0, 1]), "test": ds.select([2])}).save_to_disk(
        str(tmp_path / "dict")
    )
    cfg = DataConfig(text_column="sentence")
    assert load_table(str(tmp_path / "dict"), cfg, split="test").texts == ["third"]
    assert load_table(str(tmp_path / "dict"), cfg, split="train").texts == [t for t, _ in ROWS[:2]]
    with pytest.raises(
        UserError, match=r"dict: a DatasetDict without a 'validation' split \(it has train, test\)"
    ):
        load_table(str(tmp_path / "dict"), cfg, split="validation")


# ---------------------------------------------------------------- files written by real tools, old releases too


WRITERS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
SAVED = [
    (w, p.name)
    for w in WRITERS
    for p in sorted((FIXTURES / w).iterdir())
    if p.name != "expected.json"
]


def test_the_fixtures_come_from_the_releases_named():
    assert {"pandas-1.5.3", "datasets-2.21.0", "today"} <= set(WRITERS)
    for writer in WRITERS:
        versions = json.loads((FIXTURES / writer / "expected.json").read_text())["versions"]
        if writer != "today":
            tool, version = writer.rsplit("-", 1)
            assert versions[tool] == version


@pytest.mark.parametrize("writer, name", SAVED)
def test_files_saved_by_real_tools_read_exactly(writer, name):
    expected = json.loads((FIXTURES / writer / "expected.json").read_text())
    rows = [tuple(r) for r in expected["rows"]]
    path = FIXTURES / writer / name
    if name == "saved-dataset-dict":
        assert_rows(load_table(str(path), DataConfig(), split="train"), rows[:8])
        assert load_table(str(path), DataConfig(), split="validation").texts == [
            t for t, _ in rows[8:]
        ]
        return
    table = load_table(str(path), DataConfig())
    assert table.texts == [
        t for t, _ in rows
    ]  # tabs, quotes, LF and CRLF line breaks, "NA", "12345", spaces
    assert table.labels.tolist() == [
        expected["classes"].index(y) for _, y in rows
    ]  # ClassLabel ids, or names sorted


# ---------------------------------------------------------------- the file's kind (mutation survivors)


def test_the_kind_comes_from_the_ending_else_from_the_first_bytes(tmp_path):
    """Files written by pandas and pickle, named with an ending in any case or none at all."""
    import pickle

    import pandas as pd

    from lorafit.data.readers import _kind

    frame = pd.DataFrame({"text": ["a b", "c d"], "label": [0, 1]})
    blobs = {
        "parquet": (frame.to_parquet(), ".parquet"),
        "pickle": (pickle.dumps(frame), ".pkl"),
        "json": (("\ufeff \n" + frame.to_json(orient="records")).encode(), ".json"),
        "jsonl": (frame.to_json(orient="records", lines=True).encode(), ".jsonl"),
        "text": (frame.to_csv(index=False).encode(), ".csv"),
    }
    expected = {
        "parquet": "parquet",
        "pickle": "pickle",
        "json": "json",
        "jsonl": "json",
        "text": "text",
    }
    for name, (data, ending) in blobs.items():
        for suffix in ("", ending, ending.upper()):
            path = tmp_path / f"{name}{suffix}"
            path.write_bytes(data)
            assert _kind(path) == expected[name], (path.name, _kind(path))
    for suffix in (".tsv", ".TXT", ".pickle", ".JSONL"):
        path = tmp_path / f"other{suffix}"
        path.write_bytes(b"\x80 whatever the bytes")  # the ending decides
        assert (
            _kind(path)
            == {".tsv": "text", ".TXT": "text", ".pickle": "pickle", ".JSONL": "json"}[suffix]
        )
    sheet = tmp_path / "rows.XLSX"
    sheet.write_bytes(b"PK\x03\x04")
    with pytest.raises(UserError) as e:
        _kind(sheet)
    assert (
        str(e.value)
        == f"{sheet}: a spreadsheet; save it as .csv (or .tsv) from the spreadsheet program and give that"
    )

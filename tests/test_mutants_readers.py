"""Direct, fast tests of data/readers.py for mutation testing (`scripts/mutation.sh data.readers`).

No model and no training: small files with one problem each, read through `read_frame` (what
`load_table` calls) or the reader's helpers, and every message compared word for word with the
one written here, every frame with the rows written here. The files a user really has are in
test_readers.py (GLUE, SMS spam, TREC, files saved by old releases); these pin the decisions
and the wording between them: which line a message names, which separator is sniffed, which
quotes are refused, which text stays text.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from lorafit.config import DataConfig
from lorafit.data.readers import (
    QUOTE_FIX,
    _check_quotes,
    _delimited_problem,
    _first_bad_json_line,
    _is_header,
    _kind,
    _literal_grid,
    _quote_problem,
    _read_hub,
    _reading_problem,
    _sniff_separator,
    hub_name,
    read_frame,
    resolve_source,
)
from lorafit.errors import UserError

EXTRA_COMMA = 'put texts that contain commas in double quotes ("a, b") or remove the extra field'


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def refused(source: str, **data) -> str:
    with pytest.raises(UserError) as e:
        read_frame(source, DataConfig(**data))
    return str(e.value)


# ------------------------------------------------------------ a line with an extra field


def test_extra_field_names_the_line_the_header_and_the_fix(tmp_path):
    path = write(tmp_path, "extra.csv", "text,label\nhello,1\na,b,2\nc,3\n")
    assert refused(path) == f"{path}: line 3 has 3 fields, the header has 2; {EXTRA_COMMA}"
    # with quotes as characters, quoting cannot help: the separator inside a text split it
    assert refused(path, quoting="none") == (
        f"{path}: line 3 has 3 fields, the header has 2; remove the extra field (with "
        "data.quoting: none, commas inside a text split it)"
    )


def test_extra_field_of_a_file_without_header_and_of_other_separators(tmp_path):
    path = write(tmp_path, "rows.csv", "hello,1\nworld,2\na,b,2\n")
    assert refused(path) == f"{path}: line 3 has 3 fields, line 1 has 2; {EXTRA_COMMA}"
    tsv = write(tmp_path, "extra.tsv", "text\tlabel\nhello\t1\na\tb\t2\n")
    assert refused(tsv) == (
        f"{tsv}: line 3 has 3 fields, the header has 2; put texts that contain tabs in double "
        "quotes or remove the extra field"
    )
    semi = write(tmp_path, "semi.txt", "text;label\nhello;1\nhi;1\nho;2\na;b;2\n")
    assert refused(semi) == (
        f"{semi}: line 5 has 3 fields, the header has 2; put texts that contain semicolons in "
        "double quotes or remove the extra field"
    )


def test_original_ag_news_row_with_an_extra_field_has_no_header(tmp_path):
    path = write(tmp_path, "ag.csv", '"1","a","b"\n"2","c","d"\n"3","e","f","g"\n')
    assert refused(path) == f"{path}: line 3 has 4 fields, line 1 has 3; {EXTRA_COMMA}"


def test_reading_problem_other_parser_messages():
    path = Path("f.csv")
    eof = pd.errors.ParserError(
        "Error tokenizing data. C error: EOF inside string starting at row 7"
    )
    assert _reading_problem(path, "text", eof) == (
        'f.csv: a quote opened in row 7 is never closed; write a quote inside a quoted text as two (""), '
        'or set data.quoting: none if a " is only a character here'
    )
    # only the first line of a long message; an empty one gives the error's type
    assert _reading_problem(Path("f.parquet"), "parquet", ValueError("first line\nsecond")) == (
        "f.parquet: cannot read as parquet (first line); check the file's format"
    )
    assert _reading_problem(Path("f.parquet"), "parquet", OSError("  ")) == (
        "f.parquet: cannot read as parquet (OSError); check the file's format"
    )
    import csv

    name = _delimited_problem(
        path,
        pd.errors.ParserError("Expected 4 fields in line 9, saw 6"),
        "|",
        False,
        csv.QUOTE_MINIMAL,
    )
    assert (
        name
        == "f.csv: line 9 has 6 fields, line 1 has 4; put texts that contain pipes in double quotes or remove the extra field"
    )
    # any other parser message: as `_reading_problem` says it for text
    assert _delimited_problem(path, eof, ",", True, csv.QUOTE_MINIMAL) == _reading_problem(
        path, "text", eof
    )
    other = pd.errors.ParserError("Error tokenizing data. C error: out of memory")
    assert _delimited_problem(path, other, "\t", True, csv.QUOTE_NONE) == (
        "f.csv: cannot read as text (Error tokenizing data. C error: out of memory); check the file's format"
    )


# ---------------------------------------------------------------------- JSON


def test_json_lines_name_the_first_line_that_is_not_an_object(tmp_path):
    fix = "is not a JSON object; write one JSON object per line"
    broken = write(tmp_path, "bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label"\n')
    assert refused(broken) == f"{broken}: line 2 {fix}"
    # a line that is JSON but not an object (an array, a string, a number): no traceback
    for n, line in enumerate(("[1, 2]", '"just text"', "5")):
        path = write(
            tmp_path, f"not_object{n}.jsonl", '\n{"text": "a", "label": 1}\n\n' + line + "\n"
        )
        assert refused(path) == f"{path}: line 4 {fix}"  # blank lines count, and are skipped


def test_first_bad_json_line_directly(tmp_path):
    assert (
        _first_bad_json_line(Path(write(tmp_path, "ok.jsonl", '\ufeff{"a": 1}\n\n  \n{"b": 2}\n')))
        is None
    )
    assert (
        _first_bad_json_line(Path(write(tmp_path, "bom.jsonl", '\ufeff{"a": 1}\n{"b": 2} x\n')))
        == 2
    )
    assert _first_bad_json_line(Path(write(tmp_path, "first.jsonl", "[]\n"))) == 1


def test_json_array_files(tmp_path):
    rows = [{"text": "007", "label": "01"}, {"text": "2024", "label": "2"}]
    # a blank line before the array: still one array, not JSON lines
    path = write(tmp_path, "rows.json", "\n  " + json.dumps(rows))
    assert read_frame(path, DataConfig()).to_dict("records") == rows
    cut = write(tmp_path, "cut.json", '[{"text": "a", "label": 1}, ')
    assert refused(cut) == (
        f"{cut}: line 1 column 29: Expecting value; a file that starts with [ is read as one JSON "
        "array of objects: fix the JSON there (or write one JSON object per line)"
    )
    mixed = write(tmp_path, "mixed.json", '[{"text": "a", "label": 1}, 3]')
    assert (
        refused(mixed) == f'{mixed}: a JSON array must hold objects ({{"text": ..., "label": ...}})'
    )


def test_json_lines_keep_texts_and_labels_as_written(tmp_path):
    # texts that look like numbers or dates stay the strings they are (no dtype guessing)
    lines = [
        '{"text": "007", "label": "01"}',
        '{"text": "2024-01-02", "label": "2"}',
        '{"text": "1e3", "label": 3}',
    ]
    frame = read_frame(write(tmp_path, "rows.jsonl", "\n".join(lines) + "\n"), DataConfig())
    assert frame["text"].tolist() == ["007", "2024-01-02", "1e3"]
    assert frame["label"].tolist() == ["01", "2", 3]


# -------------------------------------------------------------------- quotes


def test_text_after_a_closing_quote_names_row_and_line(tmp_path):
    path = Path("x.csv")
    text = 'text,label\nok,1\n"Yes," he said,2\n'
    with pytest.raises(UserError) as e:
        _check_quotes(path, text, ",", True)
    assert (
        str(e.value)
        == f'x.csv: row 2 (line 3): a " closes a quoted field and text follows it (\'"Yes," he said,2\'); {QUOTE_FIX}'
    )
    assert e.value.where == "row 2 (line 3)"
    with pytest.raises(UserError) as e:  # without a header, the first line is row 1
        _check_quotes(path, '"Yes," he said,2\nok,1\n', ",", False)
    assert e.value.where == "row 1 (line 1)"
    with pytest.raises(UserError) as e:  # in the header itself
        _check_quotes(path, '"te"xt,label\nok,1\n', ",", True)
    assert e.value.where == "the header (line 1)"
    assert str(e.value).startswith('x.csv: the header (line 1): a " closes a quoted field')


def test_quote_that_runs_over_lines_and_one_never_closed(tmp_path):
    path = Path("x.csv")
    with pytest.raises(UserError) as e:
        _check_quotes(path, 'text,label\nok,1\n"a\nb\nc" d,2\nz,3\n', ",", True)
    assert str(e.value) == (
        f"x.csv: row 2 (line 3): a \" opened here ('\"a') runs over the lines up to 5, where text follows "
        f"its closing quote; {QUOTE_FIX}"
    )
    with pytest.raises(UserError) as e:
        _check_quotes(path, 'text,label\nok,1\nfine,2\n"never closed,3\n', ",", True)
    assert str(e.value) == f'x.csv: row 3 (line 4): a " opened here is never closed; {QUOTE_FIX}'


def test_quote_problem_shows_at_most_60_characters():
    for width, shown in ((60, None), (61, 57)):
        line = '"' + "x" * (width - 1)
        text = f"head\n{line}\nnext\n"
        expected = repr(line if shown is None else line[:shown] + "...")
        assert _quote_problem("'\"' expected after '\"'", 2, 2, text) == (
            f'a " closes a quoted field and text follows it ({expected})'
        )


def test_quote_problem_other_errors():
    text = "a\nb\nc\nd\ne\nf\ng\n"
    assert (
        _quote_problem("field larger than field limit (131072)", 3, 7, text)
        == 'a " opened here runs over 5 lines'
    )
    assert (
        _quote_problem("line contains NUL", 1, 1, text)
        == "not readable as delimited text (line contains NUL); check the file"
    )


def test_literal_grid_decisions():
    # same fields on every line with " read as a character
    assert _literal_grid('a\t"b\nc\td\n', "\t")
    assert _literal_grid('a\t"b\nc\t\n\n', "\t")  # an empty last field is a field
    assert not _literal_grid("a\tb\nc\n", "\t")  # fields differ
    # a doubled quote inside a quoted field is what a CSV writer makes: not a literal grid
    assert not _literal_grid('x\t"""a"\n', "\t")  # "a  written by a CSV writer
    assert not _literal_grid('x\t"a"""\n', "\t")  # a"
    assert not _literal_grid('"a ""b"" c"\tx\n', "\t")
    assert _literal_grid('x\t""\ny\t"""\n', "\t")  # too short to hold a doubled quote inside


def test_swallowed_lines_are_refused_and_multiline_texts_logged(tmp_path, caplog):
    path = write(tmp_path, "swallow.csv", 'text,label\n"hello,1\nworld",2\nlast,3\n')
    assert refused(path) == (
        f"{path}: row 1: a quote opens a field that swallows whole lines (2 rows read from 3 lines "
        f"of 2 fields each); {QUOTE_FIX}"
    )
    # a TSV written by a CSV writer (a doubled quote) whose last field is empty: still refused
    tsv = write(
        tmp_path,
        "swallow.tsv",
        'text\tlabel\tnote\n"he said ""hi""\t1\tx\nworld"\t2\t\nlast\t3\t\n',
    )
    message = refused(tsv)
    assert message.startswith(
        f"{tsv}: row 1: a quote opens a field that swallows whole lines (2 rows read from 3 lines of 3 fields each)"
    )
    # real multi-line texts (the lines have different fields): read, and said in the log
    multi = write(
        tmp_path, "multi.csv", 'text,label\n"two\nlines",1\n"three\nmore, lines\nhere",2\n'
    )
    with caplog.at_level(logging.INFO, logger="lorafit"):
        frame = read_frame(multi, DataConfig())
    assert frame["text"].tolist() == ["two\nlines", "three\nmore, lines\nhere"]
    assert f"{multi}: 2 rows from 5 lines (line breaks inside quoted fields)" in caplog.messages


# ---------------------------------------------------------------- separators


@pytest.mark.parametrize("sep", ["\t", ",", ";", "|"])
def test_separator_counted_before_quotes_are_parsed(sep):
    # every line has the separator twice; a quoted field holds one, so only counting finds it
    assert _sniff_separator(f'a{sep}"b{sep}c"\nd{sep}e{sep}f\nlast', Path("x.txt")) == sep


def test_separator_of_quoted_fields_by_the_csv_reader():
    # the usual CSV: a text quoted because it holds a comma (counts differ, fields do not)
    assert _sniff_separator('text,label\n"hello, world",1\nbye,2\nlast', Path("x.txt")) == ","
    assert _sniff_separator('"a",b\n"c,d",e\nlast', Path("x.txt")) == ","


def test_separator_sample_lines():
    # one line (and a trailing line end): that line decides
    assert _sniff_separator("text\tlabel\n", Path("x.txt")) == "\t"
    # the first 50 lines less the last (maybe cut short): 49 lines decide, the 50th does not
    lines = ["a\tb"] * 49 + ["a\tb\tc"] + ["a\tb"] * 10
    assert _sniff_separator("\n".join(lines), Path("x.txt")) == "\t"
    # every sampled line counts, not only the first, and the one before the last too
    with pytest.raises(UserError) as e:
        _sniff_separator("a\tb\nc,d\ne,f\nlast", Path("x.txt"))
    assert str(e.value) == (
        "x.txt: cannot tell the separator (no tab, comma, semicolon or pipe splits every line into the "
        "same number of fields); save it as .csv or .tsv with a header row, or as .jsonl"
    )
    with pytest.raises(UserError):
        _sniff_separator("a\tb\na\tb\na\tb\nc\nlast\tx", Path("x.txt"))
    assert _sniff_separator("one column\nrows\n", Path("x.csv")) == ","  # a .csv stays comma


# ------------------------------------------------------------------- AG News


def test_original_ag_news_csv(tmp_path):
    path = write(tmp_path, "ag.csv", '"3","NA","null value" \n"1"," Wall St.","N/A"\n')
    frame = read_frame(path, DataConfig())
    assert frame.columns.tolist() == ["text", "label"]
    assert frame["text"].tolist() == ["NA null value", "Wall St. N/A"]  # no "NA" read as missing
    assert frame["label"].tolist() == [2, 0] and frame["label"].dtype.kind == "i"
    named = read_frame(path, DataConfig(text_column="body", label_column="topic"))
    assert named.columns.tolist() == ["body", "topic"]


# ---------------------------------------------------------- folders and the hub


def test_folder_that_is_not_a_saved_dataset(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert refused(str(plain)) == (
        f"{plain}: is a folder, not a dataset saved with save_to_disk; give a data file "
        "(.csv, .tsv, .parquet, .jsonl, .pkl) or such a folder"
    )
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "state.json").write_text("{}")
    assert refused(str(fake)) == (
        f"{fake}: cannot read the saved dataset (Directory {fake} is neither a `Dataset` directory "
        "nor a `DatasetDict` directory.)"
    )


def test_hub_name():
    assert hub_name("nyu-mll/glue:rte") == ("nyu-mll/glue", "rte")
    assert hub_name("fancyzhx/ag_news") == ("fancyzhx/ag_news", None)
    assert hub_name("fancyzhx/ag_news:") == ("fancyzhx/ag_news", None)
    assert hub_name("a:b:c") == ("a", "b:c")  # the first colon splits


def test_hub_unreachable_names_the_dataset_and_local_files(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    message = refused("someorg/news:sub")
    assert message.startswith(
        "cannot reach the Hugging Face hub at http://127.0.0.1:9 for dataset 'someorg/news' ("
    )
    assert message.endswith(
        "); point data.train / data.test at local files instead, e.g. "
        "data.train=../shared/data/ag_news/train_subset.csv (or set HF_HUB_OFFLINE=1 to use files cached earlier)"
    )


def test_hub_errors_after_the_check(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as e:
        _read_hub("someorg/nothere", "train")
    assert (
        str(e.value)
        == "cannot download hub dataset 'someorg/nothere' (Couldn't reach 'someorg/nothere' on the Hub (OfflineModeIsEnabled))"
    )
    # a split the dataset does not have (a local folder of CSVs, loaded by `datasets` itself)
    folder = tmp_path / "csvs"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\na,1\n")
    with pytest.raises(UserError) as e:
        _read_hub(str(folder), "nosuch")
    assert str(e.value).startswith(
        f"hub dataset '{folder}' split 'nosuch': Unknown split \"nosuch\". Should be one of ['train']"
    )
    assert "\n" not in str(e.value)


# ------------------------------------------------------- kinds, encodings, headers


def test_the_ending_decides_the_kind_before_the_first_bytes(tmp_path):
    import pickle

    def kind(name: str, data: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        return _kind(path)

    assert (
        kind("a.csv", b'{"looks": "like JSON"},1\n') == "text"
    )  # a CSV whose first text starts with {
    assert kind("a.CSV", b"[1] first,1\n") == "text"
    assert kind("a.txt", b"PAR1 a text that starts so") == "text"
    assert kind("a.json", b"not json at all") == "json"  # the error then speaks of JSON
    assert kind("a.JSON", b"x") == "json"
    assert kind("a.parquet", b"PAR0 not parquet") == "parquet"
    assert kind("a.Parquet", b"x") == "parquet"
    protocol0 = pickle.dumps({"text": ["a"]}, protocol=0)  # Python 2's format: no \x80 opcode
    assert not protocol0.startswith(b"\x80")
    assert (
        kind("a.pkl", protocol0)
        == kind("a.PICKLE", protocol0)
        == kind("b.pickle", protocol0)
        == "pickle"
    )
    # without an ending that says it: the first bytes
    assert kind("SMSSpamCollection", b"ham\tOk lar...\n") == "text"
    assert kind("rows", b"\xef\xbb\xbf \n\t[{}]") == "json"
    assert kind("rows2", b"X{not json}") == "text"
    assert kind("data", b"PAR1....") == "parquet"
    assert kind("data2", b"\x80\x05....") == "pickle"


def test_utf8_spelled_any_way_drops_the_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nhello,1\n")
    for encoding in ("utf-8", "UTF-8", "utf8", "UTF8", "utf_8"):
        assert read_frame(str(path), DataConfig(encoding=encoding)).columns.tolist() == [
            "text",
            "label",
        ], encoding
    assert (
        refused(str(path), encoding="klingon")
        == "data.encoding 'klingon': unknown encoding; use e.g. utf-8, latin-1 or cp1252"
    )


def test_blank_files_and_blank_rows(tmp_path):
    for name, data in (("bom.csv", b"\xef\xbb\xbf"), ("blank.tsv", b" \n\n\t\n")):
        path = tmp_path / name
        path.write_bytes(data)
        assert (
            refused(str(path)) == f"{path}: the file is empty; give a file with a header and rows"
        )
    # a blank line inside is a row (row numbers stay the file's); blank lines at the end are not
    frame = read_frame(write(tmp_path, "rows.csv", "text,label\na,1\n\nb,2\n\n\n"), DataConfig())
    assert frame.fillna("").values.tolist() == [["a", "1"], ["", ""], ["b", "2"]]
    frame = read_frame(
        write(tmp_path, "short.csv", "text,label,note\na,1\nb,2,x\n,\n"), DataConfig()
    )
    assert frame.values.tolist() == [
        ["a", "1", ""],
        ["b", "2", "x"],
    ]  # missing fields are empty texts
    assert read_frame(write(tmp_path, "none.csv", "text,label\n\n\n"), DataConfig()).shape == (0, 2)


def test_texts_that_look_like_numbers_stay_texts(tmp_path):
    frame = read_frame(write(tmp_path, "n.csv", "text,label\n007,01\n1e3,2\nNA,3\n"), DataConfig())
    assert frame.values.tolist() == [["007", "01"], ["1e3", "2"], ["NA", "3"]]


def test_the_ending_sets_the_separator_before_sniffing(tmp_path):
    # a one-column .tsv of texts with commas: tab-separated (one column), not comma-sniffed
    frame = read_frame(write(tmp_path, "texts.tsv", "text\nhello, world\nbye, now\n"), DataConfig())
    assert frame.columns.tolist() == ["text"] and frame["text"].tolist() == [
        "hello, world",
        "bye, now",
    ]
    frame = read_frame(write(tmp_path, "texts.TSV", "text\nhello, world\nbye, now\n"), DataConfig())
    assert frame.columns.tolist() == ["text"]


def test_quote_errors_name_the_file(tmp_path):
    path = write(tmp_path, "said.csv", 'text,label\nok,1\n"Yes," he said,2\n')
    assert refused(path).startswith(
        f'{path}: row 2 (line 3): a " closes a quoted field and text follows it'
    )
    # a TSV re-read with quotes as characters still names the file in its own errors
    tsv = write(tmp_path, "grid.tsv", 'text\t\n"a\tb\n"c\td\n')
    assert refused(tsv) == f"{tsv}: a header column is empty; name every column in row 1"


def test_header_decisions():
    long = "x" * 41
    # a header that names the configured columns is one, however it looks
    assert _is_header([[long, "label"], ["a", "1"]], DataConfig(text_column=long))
    assert _is_header(
        [[long, "label"], ["a", "1"]], DataConfig(text_column=long, label_column="label")
    )
    assert _is_header(
        [["body", long], ["a", "1"]], DataConfig(text_column="body", label_column=long)
    )
    assert not _is_header([[long, "label"], ["a", "1"]], DataConfig())  # too long for a name
    assert _is_header([["x" * 40, "label"], ["a", "1"]], DataConfig())  # 40 characters are a name
    assert not _is_header([["ham", "Ok lar"], ["ham", "hi"]], DataConfig())  # a label found again
    assert _is_header([["text", "label"], ["a", "1"]], DataConfig(columns=["text", "label"]))
    assert not _is_header([], DataConfig())


def test_paths_samples_and_saved_splits(tmp_path):
    import datasets

    assert (
        refused("./nowhere/rows")
        == f"./nowhere/rows: file not found; check the path (relative to {Path.cwd()})"
    )
    sample = Path(resolve_source("sample"))
    assert (
        sample.name == "sample_news_train.csv"
        and sample.parent.name == "assets"
        and sample.is_file()
    )
    assert resolve_source("sample-test").endswith("assets/sample_news_test.csv")
    assert resolve_source("my.csv") == "my.csv"
    assert len(read_frame("sample", DataConfig())) == len(pd.read_csv(sample))
    folder = tmp_path / "dd"
    datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}),
        test=datasets.Dataset.from_dict({"text": ["c"], "label": [1]}),
    ).save_to_disk(str(folder))
    assert read_frame(str(folder), DataConfig())["text"].tolist() == [
        "a",
        "b",
    ]  # the train split by default
    assert read_frame(str(folder), DataConfig(), split="test")["text"].tolist() == ["c"]


def test_a_garbage_parquet_file_says_what_pyarrow_said(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all PAR0")
    message = refused(str(path))
    assert (
        message.startswith(f"{path}: cannot read as parquet (")
        and "Parquet magic bytes not found" in message
    )


def test_an_empty_file_of_any_kind_is_said_to_be_empty(tmp_path):
    for name in ("a.parquet", "a.jsonl", "a.pkl", "a.csv", "noext"):
        path = tmp_path / name
        path.write_bytes(b"")
        assert (
            refused(str(path)) == f"{path}: the file is empty; give a file with a header and rows"
        )

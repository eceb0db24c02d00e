r"""Readers: a file, a folder or a hub dataset into a `pandas.DataFrame`, as it comes.

Chosen by the file's ending, or by its first bytes when the ending says nothing (`.txt`, a
file without an extension such as the SMS Spam Collection's `SMSSpamCollection`):

- delimited text: `.tsv` / `.tab` (tab); `.csv` (comma), `.txt` and the rest sniffed (tab,
  comma, semicolon or pipe). The first row is a header when it names the configured columns
  (every one, or exactly `data.columns`), or looks like one: short distinct names, not
  numbers, none found again as a value in its own column (a label such as `ham` is). Else the
  columns are `data.columns` or 0, 1, 2... A UTF-8 BOM, CRLF line ends and quoted fields that
  hold line breaks are read as they are; `data.quoting: none` reads a `"` as a character
  (GLUE's TSVs, the SMS Spam Collection). Quotes that do not read as CSV quotes (text after
  a closing quote, a quote never closed, quoted fields that swallow whole lines) are never
  read silently altered or short: a tab-separated file whose lines all have the same fields
  with `"` as a character is read that way, with a warning giving both row counts; any other
  file is refused, naming the row and the fix.
- the original AG News CSV (no header, `"class","title","description"`, class 1-4);
- `.parquet`; `.jsonl` (JSON lines) and `.json` (a JSON array of objects, or JSON lines);
- `.pkl` / `.pickle`: the competition's pickled `datasets.Dataset`, read by an allow-list
  unpickler that runs no code (`lorafit.pickles`);
- a folder written by `datasets`' `save_to_disk` (a `Dataset`, or a `DatasetDict`: the split
  asked for);
- `sample` / `sample-test`: the news sample shipped with lorafit.

Anything else that is not an existing path is taken for a hub dataset id.

Formats converted first, by one line. TREC question classification (Li & Roth:
`train_5500.label`, `TREC_10.label`) writes `COARSE:fine question`, split by a space that no
separator sniffing can take. This keeps the coarse class, a tab and the question, byte for
byte (GNU sed: Linux, WSL, Git Bash; `gsed` on macOS):

    LC_ALL=C sed -E 's/^([A-Z]+):[^ ]+ /\1\t/' train_5500.label > trec_train.tsv

then `data.columns=[label,text] data.encoding=latin-1` (configs/trec.yaml): train_5500 holds
one byte that is not UTF-8, 0xF0 in line 66's `sister\xF0city`; Latin-1 reads it as `ð` (the
`datasets` loader writes a space there). Without data.encoding the file is refused with the
line and byte offset.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import itertools
import json
import logging
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd

from lorafit.config import DataConfig, text_columns
from lorafit.errors import UserError
from lorafit.hub import ensure_hub_reachable

log = logging.getLogger("lorafit")

TABULAR = {".csv", ".tsv", ".tab", ".txt", ".parquet", ".jsonl", ".json", ".pkl", ".pickle"}
SEPARATORS = {".tsv": "\t", ".tab": "\t"}
AG_CLASSES = {"1", "2", "3", "4"}
_LINE_END = re.compile(r"\r\n|\r|\n")


def read_frame(source: str, cfg: DataConfig, split: str = "train") -> pd.DataFrame:
    """`source` (a file, a `datasets` folder, 'sample', or a hub id) as a DataFrame; a one-line
    `UserError` naming the file (and the row where there is one) if it cannot be read."""
    source = resolve_source(source)
    if os.path.exists(source):
        return _read_path(Path(source), cfg, split)
    if Path(source).suffix.lower() in TABULAR or os.sep in source and source.startswith("."):
        raise UserError(f"{source}: file not found; check the path (relative to {os.getcwd()})")
    return _read_hub(source, split)


SAMPLES = {"sample": "sample_news_train.csv", "sample-test": "sample_news_test.csv"}


def resolve_source(source: str) -> str:
    """'sample' / 'sample-test' -> the news sample shipped with lorafit; anything else as is."""
    if source in SAMPLES:
        return str(resources.files("lorafit") / "assets" / SAMPLES[source])
    return source


def _read_path(path: Path, cfg: DataConfig, split: str) -> pd.DataFrame:
    if path.is_dir():
        return _read_saved_dataset(path, split)
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty; give a file with a header and rows")
    kind = _kind(path)
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        if kind == "json":
            return _read_json(path, cfg)
        if kind == "pickle":
            return _read_safe_pickle(path)
        return _read_delimited(path, cfg)
    except UserError:
        raise
    except UnicodeDecodeError as e:  # text inside a binary format (parquet, pickle)
        raise UserError(
            f"{path}: cannot read as {kind}: {e.reason} at byte {e.start}; check the file"
        ) from None
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise UserError(_reading_problem(path, kind, e)) from None


SPREADSHEETS = {".xlsx", ".xls", ".xlsm", ".ods", ".numbers"}


def _kind(path: Path) -> str:
    """parquet, json, pickle or text: by the ending, else by the first bytes."""
    suffix = path.suffix.lower()
    if suffix in SPREADSHEETS:
        raise UserError(
            f"{path}: a spreadsheet; save it as .csv (or .tsv) from the spreadsheet program and give that"
        )
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".json"):
        return "json"
    if suffix in (".pkl", ".pickle"):
        return "pickle"
    if suffix in SEPARATORS or suffix in (".csv", ".txt"):
        return "text"
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head[:1] == b"\x80":  # a pickle's protocol opcode
        return "pickle"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
        return "json"
    return "text"


def _not_decodable(path: Path, data: bytes, start: int, encoding: str) -> str:
    line = data[:start].count(b"\n") + 1
    return (
        f"{path}: line {line} (byte offset {start}): byte 0x{data[start : start + 1].hex()} is not "
        f"{encoding} text; set data.encoding to the file's encoding (e.g. latin-1 or cp1252) or "
        "re-save it as UTF-8"
    )


SEPARATOR_NAMES = {",": "commas", "\t": "tabs", ";": "semicolons", "|": "pipes"}


def _reading_problem(path: Path, kind: str, e: Exception) -> str:
    """A one-line message for a file the parser rejected, naming the line where we can."""
    first = _first_line(e)
    quote = re.search(r"EOF inside string starting at row (\d+)", first)
    if quote:
        return (
            f"{path}: a quote opened in row {quote[1]} is never closed; write a quote inside a "
            'quoted text as two (""), or set data.quoting: none if a " is only a character here'
        )
    if kind == "json":
        line = _first_bad_json_line(path)
        if line:
            return f"{path}: line {line} is not a JSON object; write one JSON object per line"
    return f"{path}: cannot read as {kind} ({first}); check the file's format"


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _delimited_problem(path: Path, e: Exception, sep: str, header: bool, quoting: int) -> str:
    """`_reading_problem` for pandas' parser on delimited text read with `sep`, `header` and
    `quoting`: a line with an extra field gets advice for that separator and quoting."""
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", _first_line(e))
    if not fields:
        return _reading_problem(path, "text", e)
    want, line, saw = fields.groups()
    name = SEPARATOR_NAMES[sep]
    if quoting == csv.QUOTE_NONE:
        fix = f"remove the extra field (with data.quoting: none, {name} inside a text split it)"
    elif sep == ",":
        fix = 'put texts that contain commas in double quotes ("a, b") or remove the extra field'
    else:
        fix = f"put texts that contain {name} in double quotes or remove the extra field"
    return f"{path}: line {line} has {saw} fields, {'the header has' if header else 'line 1 has'} {want}; {fix}"


def _first_bad_json_line(path: Path) -> int | None:
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    return n
            except ValueError:
                return n
    return None


# ------------------------------------------------------------ delimited text


def _read_delimited(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """A delimited text file: separator, header and quoting as the module docstring says."""
    text = _decode(path, cfg.encoding)
    if not text.strip():  # blank, or only a byte order mark (a spreadsheet's empty "CSV UTF-8")
        raise UserError(f"{path}: the file is empty; give a file with a header and rows")
    sep = SEPARATORS.get(path.suffix.lower()) or _sniff_separator(text, path)
    quoting = csv.QUOTE_NONE if cfg.quoting == "none" else csv.QUOTE_MINIMAL
    sample = _first_rows(text, sep, quoting)
    first = sample[0] if sample else []
    if cfg.columns is None and sep == "," and _is_ag_original(first):
        return _read_ag_original(path, text, cfg)
    header = _is_header(sample, cfg)
    try:
        frame = _parse(path, text, sep, header, quoting)
    except _NotCsvQuotes as e:
        # a tab-separated file whose lines all have the same fields when " is a character:
        # its quotes are characters (GLUE, the SMS Spam Collection); a CSV stays refused
        if sep != "\t" or not _literal_grid(text, sep):
            raise
        header = _is_header(_first_rows(text, sep, csv.QUOTE_NONE), cfg)
        frame = _parse(path, text, sep, header, csv.QUOTE_NONE)
        log.warning(
            '%s: %s: a " is a character here, not a CSV quote: read with data.quoting: none, %d rows '
            "(as CSV quotes: %d rows, fields changed); set data.quoting: none to say so",
            path,
            e.where,
            len(frame),
            _csv_records(text, sep) - int(header),
        )
    if cfg.columns is not None:
        frame = _name_columns(path, frame, cfg.columns)
    elif not header:
        frame.columns = [str(c) for c in frame.columns]
    return frame


def _parse(path: Path, text: str, sep: str, header: bool, quoting: int) -> pd.DataFrame:
    """The rows, every quote checked first when quotes are CSV quotes (`_NotCsvQuotes`)."""
    if quoting == csv.QUOTE_MINIMAL and '"' in text:
        _check_quotes(path, text, sep, header)
    # Every line is a row, blank ones too: skipping a blank (or whitespace-only) text line
    # would shift every later row's ID in a submission. Trailing blank lines go.
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=0 if header else None,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            quoting=quoting,
            engine="c",
        )
    except pd.errors.ParserError as e:
        raise UserError(_delimited_problem(path, e, sep, header, quoting)) from None
    if header and (
        None in frame.columns or any(str(c).startswith("Unnamed:") for c in frame.columns)
    ):
        raise UserError(f"{path}: a header column is empty; name every column in row 1")
    frame = _drop_trailing_blank(frame)
    if quoting == csv.QUOTE_MINIMAL:
        _check_row_count(path, text, frame, sep, header)
    return frame


def _decode(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    bom = len(codecs.BOM_UTF8) if utf8 and data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8" if utf8 else encoding)
    except LookupError:
        raise UserError(
            f"data.encoding {encoding!r}: unknown encoding; use e.g. utf-8, latin-1 or cp1252"
        ) from None
    except UnicodeDecodeError as e:  # offsets in the file, BOM included
        raise UserError(_not_decodable(path, data, bom + e.start, encoding)) from None


def _sniff_separator(text: str, path: Path) -> str:
    """Tab, comma, semicolon or pipe: the one found the same number of times (> 0) on each of
    the first lines; tab first (texts hold commas more often than tabs)."""
    lines = [x for x in _LINE_END.split(text[:65536])[:50] if x.strip()][:-1] or _LINE_END.split(
        text
    )[:1]
    for sep in ("\t", ",", ";", "|"):
        counts = {line.count(sep) for line in lines}
        if len(counts) == 1 and counts != {0}:
            return sep
    for sep in ("\t", ",", ";", "|"):  # quoted fields may hold the separator: count by csv
        with _long_fields():
            widths = {len(r) for r in csv.reader(io.StringIO("\n".join(lines)), delimiter=sep)}
        if len(widths) == 1 and widths != {1}:
            return sep
    if path.suffix.lower() == ".csv":  # one column, or ragged rows that the parser will name
        return ","
    raise UserError(
        f"{path}: cannot tell the separator (no tab, comma, semicolon or pipe splits every line "
        "into the same number of fields); save it as .csv or .tsv with a header row, or as .jsonl"
    )


HEADER_SAMPLE = 5000  # rows read to decide whether the first is a header


def _is_ag_original(first: list[str]) -> bool:
    return len(first) == 3 and first[0].strip().isdigit()


def _is_header(rows: list[list[str]], cfg: DataConfig) -> bool:
    """The first row names every configured column, or looks like names: short, distinct, not
    numbers, and none of them found again below as a value of its column (a label is: a
    headerless `ham,Ok lar...` file has `ham` again in the rows below)."""
    if not rows:
        return False
    cells = [c.strip() for c in rows[0]]
    if cfg.columns is not None:
        return cells == cfg.columns  # a header that names the columns as data.columns does
    named = set(text_columns(cfg.text_column)) | ({cfg.label_column} - {None})
    if named and named <= set(cells):
        return True
    names = [c for c in cells if c]  # an empty one is refused later, naming the header
    if (
        not names
        or any(len(c) > 40 or _is_number(c) for c in names)
        or len(set(names)) < len(names)
    ):
        return False
    below = [{r[j].strip() for r in rows[1:] if len(r) > j} for j in range(len(cells))]
    return not any(name and name in values for name, values in zip(cells, below))


def _is_number(cell: str) -> bool:
    """'3', '-0.5', '1e3'; not 'nan' or 'inf', which are words in a header."""
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _drop_trailing_blank(frame: pd.DataFrame) -> pd.DataFrame:
    filled = (
        frame.fillna("").apply(lambda c: c.astype(str).str.strip() != "").any(axis=1).to_numpy()
    )
    return frame.iloc[: int(np.flatnonzero(filled)[-1]) + 1 if filled.any() else 0]


QUOTE_FIX = (
    "if a \" is only a character in this file (GLUE's TSVs, the SMS Spam Collection), set "
    'data.quoting: none; else write a quote inside a quoted text as two ("")'
)


class _NotCsvQuotes(UserError):
    """Quotes that do not read as CSV quotes; `where` names the row and line."""

    def __init__(self, path: Path, where: str, problem: str):
        super().__init__(f"{path}: {where}: {problem}; {QUOTE_FIX}")
        self.where = where


@contextlib.contextmanager
def _long_fields():
    """The csv module's field limit (128 KiB) lifted while we read: a one-megabyte text is a
    text, not a runaway quote. Restored afterwards (the limit is the process's)."""
    old = csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _check_quotes(path: Path, text: str, sep: str, header: bool) -> None:
    """`_NotCsvQuotes` for quotes that a CSV parser would silently drop or let run on: text
    after a closing quote (`"Yes," he said`), a quote never closed, a quoted field over the
    size limit. Checked with the csv module's strict reader."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    records, start = 0, 1
    while True:
        try:
            with _long_fields():
                next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            row = f"row {records + 1 - int(header)}" if records + 1 > int(header) else "the header"
            raise _NotCsvQuotes(
                path, f"{row} (line {start})", _quote_problem(str(e), start, reader.line_num, text)
            ) from None
        records, start = records + 1, reader.line_num + 1


def _quote_problem(error: str, start: int, line: int, text: str) -> str:
    if "expected after" in error:
        shown = _LINE_END.split(text, maxsplit=start)[start - 1]
        shown = repr(shown if len(shown) <= 60 else shown[:57] + "...")
        if start == line:
            return f'a " closes a quoted field and text follows it ({shown})'
        return f'a " opened here ({shown}) runs over the lines up to {line}, where text follows its closing quote'
    if "unexpected end of data" in error:
        return 'a " opened here is never closed'
    if "field larger than field limit" in error:
        return f'a " opened here runs over {line - start + 1} lines'
    return f"not readable as delimited text ({error}); check the file"


def _first_rows(text: str, sep: str, quoting: int) -> list[list[str]]:
    """The first rows, to tell a header by; a quote problem cuts them short (`_parse` names it)."""
    rows: list[list[str]] = []
    try:
        with _long_fields():
            rows.extend(
                itertools.islice(
                    csv.reader(
                        io.StringIO(text, newline=""),
                        delimiter=sep,
                        quoting=cast("Literal[0, 1, 2, 3]", quoting),  # csv.QUOTE_*
                    ),
                    HEADER_SAMPLE,
                )
            )
    except csv.Error:
        pass
    return rows


def _csv_records(text: str, sep: str) -> int:
    try:
        with _long_fields():
            return sum(1 for _ in csv.reader(io.StringIO(text, newline=""), delimiter=sep))
    except csv.Error:
        return 0


def _literal_grid(text: str, sep: str) -> bool:
    """Every line has the same fields with " read as a character, and no field is quoted the
    CSV way with a doubled quote inside ("a ""b"" c"), which only a CSV writer makes."""
    lines = [x for x in _LINE_END.split(text.rstrip("\r\n")) if x.strip()]
    if len({x.count(sep) for x in lines}) != 1:
        return False
    return not any(
        f[:1] == f[-1:] == '"' and len(f) > 1 and '""' in f[1:-1]
        for x in lines
        for f in x.split(sep)
    )


def _check_row_count(path: Path, text: str, frame: pd.DataFrame, sep: str, header: bool) -> None:
    """`_NotCsvQuotes` when quotes swallowed whole rows: fewer rows than lines, while every
    line, read with " as a character, has the same fields. Line breaks inside quoted fields
    of a file that is not such a grid are real multi-line texts."""
    lines = len(_LINE_END.split(text.rstrip("\r\n \t"))) - int(header)
    if len(frame) >= lines:
        return
    widths = {line.count(sep) for line in _LINE_END.split(text.rstrip("\r\n")) if line.strip()}
    if len(widths) == 1:
        broken = frame.apply(lambda c: c.astype(str).str.contains("\n|\r")).any(axis=1).to_numpy()
        row = int(np.flatnonzero(broken)[0]) + 1 if broken.any() else len(frame)
        raise _NotCsvQuotes(
            path,
            f"row {row}",
            f"a quote opens a field that swallows whole lines ({len(frame)} rows "
            f"read from {lines} lines of {widths.pop() + 1} fields each)",
        )
    log.info(
        "%s: %d rows from %d lines (line breaks inside quoted fields)", path, len(frame), lines
    )


def _name_columns(path: Path, frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    if frame.shape[1] != len(names):
        raise UserError(
            f"{path}: data.columns names {len(names)} columns ({', '.join(names)}) but the rows "
            f"have {frame.shape[1]}; name every column, in order"
        )
    return frame.set_axis(names, axis=1)


def _read_ag_original(path: Path, text: str, cfg: DataConfig) -> pd.DataFrame:
    """The original AG News CSV: class 1-4, title, description -> text, label 0-3."""
    try:  # the first row has 3 fields (`_is_ag_original`), so every row must
        frame = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise UserError(_delimited_problem(path, e, ",", False, csv.QUOTE_MINIMAL)) from None
    bad = ~frame[0].str.strip().isin(AG_CLASSES)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise UserError(
            f"{path}: row {row}: class {frame[0][row - 1]!r} is not 1-4 (original AG News format)"
        )
    text_col = (text_columns(cfg.text_column) or ["text"])[0]
    out = (frame[1].str.strip() + " " + frame[2].str.strip()).str.strip()
    label = frame[0].str.strip().astype(int) - 1
    return pd.DataFrame({text_col: out, cfg.label_column or "label": label})


# ------------------------------------------------------------- other formats


def _read_json(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """A JSON array of objects, or JSON lines (one object a line)."""
    text = _decode(path, cfg.encoding)
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{path}: line {e.lineno} column {e.colno}: {e.msg}; a file that starts with [ is read as "
                "one JSON array of objects: fix the JSON there (or write one JSON object per line)"
            ) from None
        if not all(isinstance(r, dict) for r in rows):
            raise UserError(
                f'{path}: a JSON array must hold objects ({{"text": ..., "label": ...}})'
            )
        return pd.DataFrame(rows)
    try:
        return pd.read_json(io.StringIO(text), lines=True, dtype=False)
    except TypeError as e:  # a line that is JSON but not an object (`[1, 2]`, `"text"`)
        raise UserError(_reading_problem(path, "json", e)) from None


def _read_saved_dataset(path: Path, split: str) -> pd.DataFrame:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    if not any(
        (path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")
    ):
        raise UserError(
            f"{path}: is a folder, not a dataset saved with save_to_disk; give a data file "
            "(.csv, .tsv, .parquet, .jsonl, .pkl) or such a folder"
        )
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as e:
        raise UserError(
            f"{path}: cannot read the saved dataset ({str(e).splitlines()[0]})"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(
                f"{path}: a DatasetDict without a '{split}' split (it has {', '.join(ds)}); give "
                f"the split's folder, e.g. {path / next(iter(ds))}"
            )
        ds = ds[split]
    return dataset_frame(ds)


def hub_name(source: str) -> tuple[str, str | None]:
    """'nyu-mll/glue:rte' -> ('nyu-mll/glue', 'rte'): a hub id and its configuration (subset)."""
    name, sep, subset = source.partition(":")
    return (name, subset) if sep and subset else (name, None)


def _read_hub(source: str, split: str) -> pd.DataFrame:
    dataset_id, subset = hub_name(source)
    ensure_hub_reachable(
        f"dataset '{dataset_id}'",
        "point data.train / data.test at local files instead, e.g. "
        "data.train=../shared/data/ag_news/train_subset.csv",
    )
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, subset, split=split)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(
            f"hub dataset '{source}' split '{split}': {str(e).splitlines()[0]}"
        ) from None
    except (ConnectionError, OSError) as e:
        raise UserError(
            f"cannot download hub dataset '{dataset_id}' ({str(e).splitlines()[0]})"
        ) from None
    return dataset_frame(ds)


def dataset_frame(ds) -> pd.DataFrame:
    """A `datasets.Dataset` as a frame. Its ClassLabel columns hold ids; their names, in id
    order, are kept in `frame.attrs["class_labels"]` ({column: names}), so that the classes of
    a hub or saved dataset are named as its authors named them (`settle`)."""
    import datasets

    frame = ds.to_pandas()
    named = {
        column: [str(n) for n in feature.names]
        for column, feature in ds.features.items()
        if isinstance(feature, datasets.ClassLabel)
    }
    if named:
        frame.attrs["class_labels"] = named
    return frame


# ------------------------------------------------------- the competition pickle


def _read_safe_pickle(path: Path) -> pd.DataFrame:
    from lorafit.pickles import read_pickle_frame  # allow-list unpickler; see lorafit.pickles

    return read_pickle_frame(path)

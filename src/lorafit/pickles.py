"""The competition pickle: read a pickled `datasets.Dataset` without running code from it.

    frame = read_pickle_frame(Path("test_unlabelled.pkl"))  # its columns, rows in dataset[i] order

A pickle is a small program that names functions ("globals") and calls them, so unpickling a
stranger's file can run anything. `SafeUnpickler` resolves a name only if it is in `ALLOWED`,
after mapping Python 2 names the way `pickle` does (`copy_reg` -> `copyreg`) and numpy 1.x
names to numpy 2.x ones (`numpy.core` -> `numpy._core`). Even an allowed name runs no code
from `datasets`: its classes resolve to inert stand-ins (`_Kept`) that only keep the saved
attributes, because their own `__setstate__` may open a path (a memory-mapped table, a table
over 4 GiB saved to a temporary file). numpy and pyarrow constructors are wrapped to accept
numeric arrays only and to validate every Arrow array. The rows are then put together here:
blocks concatenated, then the indices mapping (shuffle/select/filter/sort/train_test_split)
applied, so row i is `dataset[i]`; pickles written by `datasets` 2.x to 5.x read the same.

Refused, with one line that says what to do: any other global (e.g. `os.system`), a
memory-mapped table (the pickle holds only the path of an Arrow file on the machine that
wrote it), a pickled pandas DataFrame (reading one means running pandas' reconstructors;
save it as parquet or CSV instead), object arrays. The fixtures in `tests/fixtures/pickles`
(written by real old releases, see `make_pickles.py` there) and 40+ attack pickles are in
`tests/test_pickles.py`.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lorafit.errors import UserError

# (module, name) after renaming -> why a pickled datasets.Dataset needs it. Nothing else loads;
# tests/test_pickles.py pins this set and checks that the fixtures use every entry.
ALLOWED = {
    # datasets classes: inert stand-ins that keep their saved attributes (see _Kept)
    ("datasets.arrow_dataset", "Dataset"): "the pickled dataset itself",
    ("datasets.table", "InMemoryTable"): "a table whose rows are in the pickle",
    (
        "datasets.table",
        "ConcatenationTable",
    ): "blocks joined by concatenate_datasets (the competition file)",
    ("datasets.info", "DatasetInfo"): "metadata saved with every dataset; kept, unused",
    ("datasets.features.features", "Features"): "the column types; kept, unused",
    ("datasets.features.features", "Value"): "a plain column type such as string; kept, unused",
    ("datasets.features.features", "ClassLabel"): "a label column's type; kept, unused",
    ("datasets.splits", "NamedSplit"): "the split name of a dataset loaded by split; kept, unused",
    (
        "datasets.splits",
        "SplitDict",
    ): "the splits recorded in a loaded dataset's info; kept, unused",
    ("datasets.splits", "SplitInfo"): "one split's row count in that record; kept, unused",
    # pyarrow: the Arrow tables, rebuilt from bytes in the pickle (arrays validated in full)
    ("pyarrow.lib", "py_buffer"): "bytes from the pickle as an Arrow buffer",
    ("pyarrow.lib", "type_for_alias"): "an Arrow type from its name ('string', 'int64')",
    ("pyarrow.lib", "_restore_array"): "an Arrow array from its type, length and buffers",
    ("pyarrow.lib", "chunked_array"): "a table column from its arrays",
    ("pyarrow.lib", "field"): "a column's name and type",
    ("pyarrow.lib", "schema"): "a table's columns",
    ("pyarrow.lib", "_reconstruct_table"): "a table from its columns and schema",
    (
        "pyarrow.lib",
        "_reconstruct_record_batch",
    ): "a record batch (datasets 2.15-2.21 save a table's batches)",
    # numpy: the int64 offsets array datasets 2.15-2.21 save beside those batches
    ("numpy", "ndarray"): "a marker that only _reconstruct accepts (never called)",
    ("numpy", "dtype"): "the offsets' dtype; numeric dtypes only",
    (
        "numpy._core.multiarray",
        "_reconstruct",
    ): "an empty array that the pickle fills (numeric only)",
    ("numpy._core.numeric", "_frombuffer"): "a numeric array from bytes (protocol 5)",
    # builtins and copyreg: how bytes and plain objects are written at old protocols
    ("builtins", "bytearray"): "an Arrow buffer's bytes (protocols 3-5)",
    ("_codecs", "encode"): "bytes at protocols 0-2 (latin-1 text to bytes; latin-1 only)",
    ("copyreg", "_reconstructor"): "objects at protocols 0-1 (stand-ins only)",
    ("builtins", "object"): "the base class copyreg._reconstructor names (protocols 0-1)",
}

HINT = "only a pickled datasets.Dataset is accepted (nothing was run)"
MAPPED_HINT = (
    "a memory-mapped datasets table: the pickle holds only the path of an Arrow file on the "
    "machine that wrote it, not the rows; there, re-save the rows themselves, e.g. "
    "ds.to_parquet('test.parquet') (lorafit reads .parquet), or pickle "
    "Dataset.from_dict(ds.to_dict())"
)
PANDAS_HINT = (
    "a pickled pandas DataFrame, which lorafit does not unpickle (reading one runs pandas "
    "code from the file); save it with df.to_parquet('test.parquet') or "
    "df.to_csv('test.csv', index=False) and pass that file"
)


class Refused(pickle.UnpicklingError):
    """A pickle asked for something outside the allow-list; `hint` is the whole message."""

    def __init__(self, what: str, hint: str | None = None):
        super().__init__(what)
        self.hint = hint or f"refused to load {what}; {HINT}"


# ------------------------------------------------------------------ stand-ins


class _Kept:
    """Stands in for an allowed `datasets` class: keeps what the pickle gives it, runs nothing."""

    original = "?"
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: dict[Any, Any]
    values: list[Any]

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self.args, self.kwargs, self.state, self.items, self.values = args, kwargs, None, {}, []
        return self

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # dict subclasses (SplitDict) at protocol 2+
        self.items[key] = value

    def append(self, value):
        self.values.append(value)

    def extend(self, values):
        self.values.extend(values)


def _kept(original: str) -> type[_Kept]:
    return type(f"Kept[{original}]", (_Kept,), {"original": original})


_DATASET = _kept("datasets.Dataset")
_IN_MEMORY = _kept("datasets.table.InMemoryTable")
_CONCATENATED = _kept("datasets.table.ConcatenationTable")


class _NdarrayMarker:
    """What `numpy.ndarray` resolves to: the first argument `_reconstruct` expects, no more."""


class _NumericArray(np.ndarray):
    """An ndarray whose pickled state may only hold a plain numeric dtype."""

    def __setstate__(self, state):
        _numeric(state[-3])
        super().__setstate__(state)


def _numeric(dtype) -> np.dtype:
    ok = isinstance(dtype, np.dtype) and dtype.kind in "biuf"
    if not (ok and dtype.flags == 0 and dtype.fields is None and dtype.subdtype is None):
        raise Refused(f"a numpy array of dtype {dtype!r}")
    return dtype


def _dtype(spec, align=False, copy=True):
    if not isinstance(spec, str):
        raise Refused(f"numpy.dtype({type(spec).__name__})")
    # copy=True always: setting the state of a shared built-in dtype would change it everywhere
    return _numeric(np.dtype(spec, bool(align), True))


def _reconstruct(subtype, _shape, _dtype_code):
    if subtype is not _NdarrayMarker:
        raise Refused(f"numpy._core.multiarray._reconstruct of {subtype!r}")
    # empty: the state that follows sets shape, dtype and bytes (numpy checks they agree)
    return np.ndarray.__new__(_NumericArray, (0,), np.uint8)


def _frombuffer(buffer, dtype, shape, order):
    array = np.frombuffer(bytes(buffer), dtype=_numeric(dtype))
    return array.reshape(tuple(shape)[::-1]).T if order == "F" else array.reshape(tuple(shape))


def _latin1(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise Refused(f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin-1")


def _reconstructor(cls, base, state):
    if not (isinstance(cls, type) and issubclass(cls, _Kept)) or base is not object:
        raise Refused(f"copyreg._reconstructor({cls!r}, {base!r})")
    obj = cls.__new__(cls)
    obj.state = state
    return obj


def _restore_array(data):
    import pyarrow as pa

    array = pa.lib._restore_array(data)
    array.validate(full=True)  # buffers from a stranger: check offsets and lengths before use
    return array


def _resolvers() -> dict:
    kept = {
        ("datasets.arrow_dataset", "Dataset"): _DATASET,
        ("datasets.table", "InMemoryTable"): _IN_MEMORY,
        ("datasets.table", "ConcatenationTable"): _CONCATENATED,
        ("numpy", "ndarray"): _NdarrayMarker,
        ("numpy", "dtype"): _dtype,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("_codecs", "encode"): _latin1,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("pyarrow.lib", "_restore_array"): _restore_array,
    }
    for module, name in ALLOWED:
        if module.startswith("datasets.") and (module, name) not in kept:
            kept[module, name] = _kept(f"{module}.{name}")
    return kept


RESOLVERS = _resolvers()  # the rest (pyarrow.lib constructors, bytearray, object) are themselves


def canonical_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names as `pickle` maps them (`_compat_pickle`), numpy 1.x names as numpy 2.x."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[module, name]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    if module == "numpy.core" or module.startswith("numpy.core."):
        module = "numpy._core" + module[len("numpy.core") :]
    return module, name


class SafeUnpickler(pickle.Unpickler):
    """Resolves only the names in `ALLOWED` (renamed first); records which ones it used."""

    def __init__(self, file):
        super().__init__(file)
        self.used: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str):
        key = canonical_name(module, name)
        if key not in ALLOWED:
            if key == ("datasets.table", "MemoryMappedTable"):
                raise Refused("datasets.table.MemoryMappedTable", MAPPED_HINT)
            if key[0].split(".")[0] == "pandas":
                raise Refused(".".join(key), PANDAS_HINT)
            raise Refused(".".join(key))
        self.used.add(key)
        if key in RESOLVERS:
            return RESOLVERS[key]
        return getattr(importlib.import_module(key[0]), key[1])  # pyarrow.lib, builtins


def unpickle(data: bytes):
    """(object, names used) from pickle bytes, through `SafeUnpickler`; raises on refusal."""
    unpickler = SafeUnpickler(io.BytesIO(data))
    return unpickler.load(), unpickler.used


# ------------------------------------------------------------------ rows in order


def read_pickle_table(path: Path):
    """The rows of a pickled `datasets.Dataset` as a pyarrow Table, in `dataset[i]` order."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj, _ = unpickle(data)
    except Refused as e:
        raise UserError(f"{path}: {e.hint}") from None
    except Exception as e:  # noqa: BLE001 - any failure inside the pickle stream
        raise UserError(f"{path}: not a readable pickle ({_one_line(e)}); {HINT}") from None
    if not isinstance(obj, _DATASET):
        name = obj.original if isinstance(obj, _Kept) else type(obj).__name__
        raise UserError(f"{path}: holds a {name}, expected a datasets.Dataset")
    try:
        return _rows_in_order(obj)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a dataset whose parts do not fit together
        raise UserError(
            f"{path}: a damaged datasets.Dataset ({_one_line(e)}); re-save it"
        ) from None


def _one_line(e: Exception) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= 200 else text[:197] + "..."


def read_pickle_frame(path: Path) -> pd.DataFrame:
    """`read_pickle_table` as a DataFrame (what `lorafit.data` checks row by row)."""
    return read_pickle_table(path).to_pandas()


def _state(obj: _Kept) -> dict:
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2:  # (state, slot state)
        state = {**(state[0] or {}), **(state[1] or {})}
    return state if isinstance(state, dict) else {}


def _rows_in_order(dataset: _Kept):
    state = _state(dataset)
    table = _arrow(state.get("_data"))
    indices = state.get("_indices")
    if indices is not None:  # shuffle/select/filter/sort/split: row i is table[indices[i]]
        order = _arrow(indices).column(0)
        table = table.take(order)
    return table


def _arrow(obj):
    """The pyarrow Table inside a stand-in InMemoryTable / ConcatenationTable."""
    import pyarrow as pa

    state = _state(obj) if isinstance(obj, _Kept) else {}
    if isinstance(obj, _IN_MEMORY):
        if "path" in state:
            raise UserError(
                "its table was saved to a temporary Arrow file on the machine that wrote it "
                "(datasets does that for tables over 4 GiB); save the rows with "
                "ds.to_parquet('test.parquet') and pass that file"
            )
        if "table" in state:
            table = state["table"]
        elif "_batches" in state:
            table = pa.Table.from_batches(list(state["_batches"]), schema=state.get("_schema"))
        else:
            table = None
    elif isinstance(obj, _CONCATENATED):
        rows = [row if isinstance(row, list) else [row] for row in state.get("blocks", [])]
        if not rows:
            raise UserError("a ConcatenationTable without blocks; re-save the dataset")
        tables = [_side_by_side([_arrow(block) for block in row]) for row in rows]
        table = pa.concat_tables(tables, promote_options="default")
    else:
        table = None
    if not isinstance(table, pa.Table):
        raise UserError(f"holds a datasets.Dataset without an Arrow table ({type(obj).__name__})")
    table.validate(full=True)
    return table


def _side_by_side(tables):
    first = tables[0]
    for other in tables[1:]:
        for name, column in zip(other.column_names, other.columns):
            first = first.append_column(name, column)
    return first

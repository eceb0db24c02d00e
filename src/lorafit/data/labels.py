"""Labels as the user wrote them: the class list of a run and the mapping of a label column to ids.

    classes = class_names(train_frame["label"], "train.csv", given=[])   # ['ham', 'spam']
    ids = label_ids(dev_frame["label"], "dev.csv", classes)              # array([0, 1, 0, ...])

The class list comes from the training file: string labels sorted (`ham`, `spam`), integer
labels in numeric order (`0`..`3`). `data.label_names` may fix the order and add classes that
training lacks; with integer labels it names the ids instead (AG News: `0` is World).

A label column maps to ids by a rule that never guesses between two readings: a label that is
one of the class names is that class; an integer is an id (0..K-1) only when the class names
are not themselves integers (names given for integer labels, as AG News' configs do). So a
run trained on labels 1-4 without names reads `1` as the class named `1`, never as id 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from lorafit.errors import UserError

_INT = re.compile(r"[+-]?\d+")


def normalise(value) -> str:
    """A label cell as text: stripped, `None` / NaN -> '', an integer-valued float -> '3'."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+\.0*", text):  # '3.0' from a float column written as text
        return text.split(".")[0]
    return text


def is_integer(text: str) -> bool:
    return _INT.fullmatch(text) is not None


def class_names(
    column: Sequence, source: str, given: Sequence[str] = (), *, at_least: int = 2
) -> list[str]:
    """The classes of a training label column: `given` (data.label_names) when set, else the
    labels found, sorted (integers numerically). Refuses empty labels, a label outside `given`
    and fewer than two classes, naming the row."""
    values = [normalise(v) for v in column]
    for i, v in enumerate(values, start=1):
        if not v:
            raise UserError(f"{source}: row {i}: the label is empty; fill it in or remove the row")
    given = _distinct(given)
    if given:
        label_ids(values, source, given)  # every training label must be a class (or an id)
        return given
    found = sorted(set(values), key=lambda v: (0, int(v), v) if is_integer(v) else (1, 0, v))
    if all(is_integer(v) for v in found):
        found = [str(int(v)) for v in found]
        found = sorted(set(found), key=int)
    if len(found) < at_least:
        raise UserError(
            f"{source}: every row has the label {found[0]!r}; a classifier needs at least 2 classes "
            "(or list the others in data.label_names)"
        )
    return found


def _distinct(given: Sequence[str]) -> list[str]:
    """data.label_names as text, refused when it names a class twice."""
    names = [str(n) for n in given]
    if len(set(names)) != len(names):
        raise UserError(f"data.label_names: {names} names a class twice; give each class once")
    return names


def label_ids(column: Sequence, source: str, names: Sequence[str]) -> np.ndarray:
    """The class id of every label in `column` (the rule in the module docstring); a label that
    is not a class: a one-line `UserError` naming it and its row."""
    names = list(names)
    index = {n: i for i, n in enumerate(names)}
    ids_allowed = not all(is_integer(n) for n in names)
    if not ids_allowed:  # integer class names: compare as numbers ('07' is 7)
        index.update({str(int(n)): i for i, n in enumerate(names)})
    out = np.empty(len(column), dtype=np.int64)
    for i, raw in enumerate(column, start=1):
        v = normalise(raw)
        if not ids_allowed and is_integer(v):
            v = str(int(v))
        if v in index:
            out[i - 1] = index[v]
        elif ids_allowed and is_integer(v) and 0 <= int(v) < len(names):
            out[i - 1] = int(v)
        elif not v:
            raise UserError(f"{source}: row {i}: the label is empty; fill it in or remove the row")
        else:
            raise UserError(f"{source}: row {i}: label {v!r} {_not_a_class(v, names, ids_allowed)}")
    return out


def _not_a_class(v: str, names: list[str], ids_allowed: bool) -> str:
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    if ids_allowed and is_integer(v):
        return (
            f"is out of range 0-{len(names) - 1} (classes: {shown}); fix the row, or add the class "
            "to data.label_names"
        )
    return (
        f"is not one of the classes ({shown}); fix the row, or add it to data.label_names "
        "(an evaluation file may only hold classes the run was trained on)"
    )


#: the column of label sets joined from data.label_columns' 0/1 columns (a name no file has)
LABEL_SETS = "\0label sets"


def is_multi_label(cfg) -> bool:
    """True when `cfg` (a DataConfig) belongs to a `task: multi_label` run: a cell is a label set."""
    return getattr(cfg, "_task", "classification") == "multi_label"


def cell_items(value) -> list[str]:
    """The labels of a multi-label cell: a list (parquet, a `datasets` folder) as it is, text
    split at commas (`4,27`, `joy, love`); an empty cell holds none."""
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [normalise(v) for v in value]
    else:
        items = [normalise(v) for v in normalise(value).split(",")]
    return [v for v in items if v]


def set_names(column: Sequence, source: str, given: Sequence[str] = ()) -> list[str]:
    """The labels of a multi-label training column (every label any row holds), or `given`;
    each row's labels checked against them."""
    flat = [item for cell in column for item in cell_items(cell)]
    if not flat and not given:
        raise UserError(f"{source}: no row holds a label; a multi-label run needs labelled rows")
    if given:
        names = _distinct(given)
        label_sets(column, source, names)  # each row's labels, the error naming the file's row
        return names
    return class_names(flat, source, at_least=2)


def label_sets(column: Sequence, source: str, names: Sequence[str]) -> np.ndarray:
    """Each row's labels as a 0/1 row over `names` ([rows, labels], float32); each label read
    by the rule of `label_ids` (a name, or an id 0..K-1 when the names are not integers); a
    label that is not one: a one-line `UserError` naming it and its row."""
    out = np.zeros((len(column), len(names)), dtype=np.float32)
    for i, cell in enumerate(column, start=1):
        items = cell_items(cell)
        if items:
            try:
                out[i - 1, label_ids(items, source, names)] = 1.0
            except UserError as e:  # the item's position in the cell is not the file's row
                raise UserError(re.sub(r": row \d+: ", f": row {i}: ", str(e), count=1)) from None
    return out


def is_regression(cfg) -> bool:
    """True when `cfg` (a DataConfig) belongs to a `task: regression` run: labels are numbers."""
    return getattr(cfg, "_task", "classification") == "regression"


def label_values(column: Sequence, source: str) -> np.ndarray:
    """The numbers of a regression label column (float32); an empty, non-numeric or infinite
    label: a one-line `UserError` naming its row."""
    out = np.empty(len(column), dtype=np.float32)
    for i, raw in enumerate(column, start=1):
        v = normalise(raw)
        if not v:
            raise UserError(f"{source}: row {i}: the label is empty; fill it in or remove the row")
        try:
            number = float(v)
        except ValueError:
            raise UserError(
                f"{source}: row {i}: label {v!r} is not a number (task: regression reads numbers); "
                "fix the row, or set task: classification for class labels"
            ) from None
        if not math.isfinite(number):
            raise UserError(
                f"{source}: row {i}: label {v!r} is not a finite number; fix the row or remove it"
            )
        out[i - 1] = number
    return out


def written_as_ids(column: Sequence, names: Sequence[str]) -> bool:
    """True when a training column wrote its labels as ids 0..K-1 rather than as the class
    names (AG News: integers, with names from data.label_names)."""
    names = list(names)
    if all(is_integer(n) for n in names):
        return False
    return all(is_integer(normalise(v)) and normalise(v) not in names for v in column)

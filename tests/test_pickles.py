"""The competition pickle (lorafit.pickles): every fixture written by a real `datasets` release
reads with the exact texts in `dataset[i]` order, through `load_table` and the real CLI; the
allow-list is pinned and each entry is used; and 40+ attack pickles are refused through the
CLI with exit code 2, one line, no output file and nothing run (each would create a marker).

Fixtures: tests/fixtures/pickles/<writer>/*.pkl, each with a .json of what that release
reports as `[ds[i] for i in range(len(ds))]`; regenerate with
`python tests/fixtures/pickles/make_pickles.py` (see its docstring).
"""

from __future__ import annotations

import copyreg
import csv
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lorafit.config import DataConfig
from lorafit.data import load_table
from lorafit.errors import UserError
from lorafit.pickles import ALLOWED, canonical_name, unpickle

from .test_bad_inputs import assert_fails_cleanly

FIXTURES = Path(__file__).parent / "fixtures" / "pickles"
PICKLES = sorted(FIXTURES.glob("*/*.pkl"))
ACCEPTED = [p for p in PICKLES if "refused" not in json.loads(p.with_suffix(".json").read_text())]
REAL_FORMAT = FIXTURES / "datasets-2.21.0" / "competition-p4.pkl"  # as test_unlabelled.pkl

PINNED = {
    ("datasets.arrow_dataset", "Dataset"),
    ("datasets.table", "InMemoryTable"),
    ("datasets.table", "ConcatenationTable"),
    ("datasets.info", "DatasetInfo"),
    ("datasets.features.features", "Features"),
    ("datasets.features.features", "Value"),
    ("datasets.features.features", "ClassLabel"),
    ("datasets.splits", "NamedSplit"),
    ("datasets.splits", "SplitDict"),
    ("datasets.splits", "SplitInfo"),
    ("pyarrow.lib", "py_buffer"),
    ("pyarrow.lib", "type_for_alias"),
    ("pyarrow.lib", "_restore_array"),
    ("pyarrow.lib", "chunked_array"),
    ("pyarrow.lib", "field"),
    ("pyarrow.lib", "schema"),
    ("pyarrow.lib", "_reconstruct_table"),
    ("pyarrow.lib", "_reconstruct_record_batch"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}


def expected(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


# ------------------------------------------------------------------ fixtures read


@pytest.mark.parametrize("path", PICKLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_fixture_reads_in_dataset_order(path):
    want = expected(path)
    if "refused" in want:
        fragment = {
            "memory-mapped": "memory-mapped datasets table",
            "pandas": "pickled pandas DataFrame",
        }
        with pytest.raises(UserError, match=fragment[want["refused"]]) as e:
            load_table(str(path), DataConfig(), need_labels=False)
        assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
        return
    table = load_table(str(path), DataConfig(), need_labels=False)
    assert table.texts == want["texts"]
    if want["labels"] is None:
        assert table.labels is None
    else:
        assert table.labels.tolist() == want["labels"]


def test_the_fixtures_cover_what_users_have():
    versions = json.loads((FIXTURES / "VERSIONS.json").read_text())
    assert sorted(versions) == sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
    majors = {v["datasets"].split(".")[0] for v in versions.values()}
    assert {"2", "3", "4", "5"} <= majors
    numpy_1 = [
        w
        for w, v in versions.items()
        if v["datasets"].startswith("2.") and v["numpy"].startswith("1.")
    ]
    numpy_2 = [
        w
        for w, v in versions.items()
        if v["datasets"].startswith("2.") and v["numpy"].startswith("2.")
    ]
    assert numpy_1 and numpy_2
    cases = {p.stem for p in PICKLES}
    for case in (
        "select-p4",
        "filter-p4",
        "sort-p4",
        "split-p4",
        "memory-mapped-p4",
        "dataframe-p4",
    ):
        assert case in cases
    assert {f"competition-p{p}" for p in range(6)} <= cases
    assert sum(p.stat().st_size for p in FIXTURES.rglob("*")) < 700_000


def test_the_real_format_fixture_is_the_competition_files_format():
    """The 2.21/numpy-2 fixture uses exactly the globals the real test_unlabelled.pkl names."""
    data = REAL_FORMAT.read_bytes()
    assert data[:2] == b"\x80\x04"  # protocol 4
    _, used = unpickle(data)
    assert used == {
        ("builtins", "bytearray"),
        ("datasets.arrow_dataset", "Dataset"),
        ("datasets.features.features", "Features"),
        ("datasets.features.features", "Value"),
        ("datasets.info", "DatasetInfo"),
        ("datasets.table", "ConcatenationTable"),
        ("datasets.table", "InMemoryTable"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("pyarrow.lib", "_reconstruct_record_batch"),
        ("pyarrow.lib", "_reconstruct_table"),
        ("pyarrow.lib", "_restore_array"),
        ("pyarrow.lib", "chunked_array"),
        ("pyarrow.lib", "field"),
        ("pyarrow.lib", "py_buffer"),
        ("pyarrow.lib", "schema"),
        ("pyarrow.lib", "type_for_alias"),
    }
    texts = expected(REAL_FORMAT)["texts"]
    physical = load_table(
        str(FIXTURES / "datasets-2.21.0" / "plain-p5.pkl"), DataConfig(), need_labels=False
    )
    assert (
        sorted(texts) == sorted(physical.texts) and texts != physical.texts
    )  # shuffled: _indices honoured


# ------------------------------------------------------------------ the allow-list


def test_the_allow_list_is_pinned_and_every_entry_has_a_reason():
    """Adding a name is a decision: change PINNED here too (and say why in ALLOWED)."""
    assert set(ALLOWED) == PINNED
    for key, reason in ALLOWED.items():
        assert reason.strip() and "\n" not in reason, key


def test_every_allowed_name_is_needed_by_a_fixture():
    used = set()
    for path in ACCEPTED:
        used |= unpickle(path.read_bytes())[1]
    assert used == set(ALLOWED)


def test_names_are_mapped_like_pickle_does_before_the_check():
    assert canonical_name("copy_reg", "_reconstructor") == ("copyreg", "_reconstructor")
    assert canonical_name("__builtin__", "bytearray") == ("builtins", "bytearray")
    assert canonical_name("__builtin__", "getattr") == ("builtins", "getattr")  # then refused
    assert canonical_name("numpy.core.multiarray", "_reconstruct") == (
        "numpy._core.multiarray",
        "_reconstruct",
    )
    assert canonical_name("numpy.core.numeric", "_frombuffer") == (
        "numpy._core.numeric",
        "_frombuffer",
    )


# ------------------------------------------------------------------ through the CLI


@pytest.fixture(scope="module")
def two_runs(tiny_model, small_csv, tmp_path_factory) -> tuple[Path, Path]:
    from lorafit.train import train

    parent = tmp_path_factory.mktemp("pickle-runs")
    run = train(
        None,
        [
            f"model.name={tiny_model}",
            f"data.train={small_csv}",
            "data.test=null",
            "data.val_size=40",
            "model.max_length=64",
            "train.max_steps=4",
            "train.eval_every=2",
            "log.progress=false",
            f"run.dir={parent}",
        ],
    )
    copy = parent / "copy"
    shutil.copytree(run, copy)
    return run, copy


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_evaluate_and_ensemble_read_the_real_format(two_runs, tmp_path, capsys):
    """IDs 0..N-1 in dataset[i] order: the same labels as the same texts given as a CSV."""
    from lorafit.cli import main

    run, copy = two_runs
    texts = expected(REAL_FORMAT)["texts"]
    same_csv = tmp_path / "same.csv"
    with open(same_csv, "w", newline="") as f:
        csv.writer(f).writerows([["text"], *[[t] for t in texts]])
    for name, source in (("pkl", REAL_FORMAT), ("csv", same_csv)):
        assert (
            main(
                [
                    "predict",
                    str(run),
                    "--input",
                    str(source),
                    "--output",
                    str(tmp_path / f"{name}.csv"),
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "ensemble",
                    str(run),
                    str(copy),
                    "--input",
                    str(source),
                    "--output",
                    str(tmp_path / f"e-{name}.csv"),
                ]
            )
            == 0
        )
    capsys.readouterr()
    for prefix in ("", "e-"):
        from_pickle, from_csv = (
            _csv_rows(tmp_path / f"{prefix}pkl.csv"),
            _csv_rows(tmp_path / f"{prefix}csv.csv"),
        )
        assert [r["ID"] for r in from_pickle] == [str(i) for i in range(len(texts))]
        assert from_pickle == from_csv

    labelled = FIXTURES / "datasets-2.19.2" / "labelled-p4.pkl"
    want = expected(labelled)
    labelled_csv = tmp_path / "labelled.csv"
    with open(labelled_csv, "w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *zip(want["texts"], want["labels"])])
    assert main(["evaluate", str(run), "--input", str(labelled)]) == 0
    from_pickle = capsys.readouterr().out
    assert main(["evaluate", str(run), "--input", str(labelled_csv)]) == 0
    assert capsys.readouterr().out.replace(str(labelled_csv), "X") == from_pickle.replace(
        str(labelled), "X"
    )


# ------------------------------------------------------------------ attacks


class Ref:
    """A global named by string, written as GLOBAL / STACK_GLOBAL without importing it."""

    def __init__(self, dotted: str):
        self.module, _, self.name = (
            dotted.rpartition(":") if ":" in dotted else dotted.rpartition(".")
        )

    def __call__(self, *args):  # the pure-Python pickler wants a callable in a reduce tuple
        raise AssertionError("never called")


class Call:
    """`func(*args)` at unpickling time (REDUCE), then `state` (BUILD) when given."""

    def __init__(self, func, *args, state=None):
        self.func = Ref(func) if isinstance(func, str) else func
        self.args, self.state = args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)

    def __call__(self, *args):  # a Call can be the function of another Call
        raise AssertionError("never called")


class Writer(pickle._Pickler):
    """The pure-Python pickler, writing `Ref`s by name (any module, any protocol)."""

    def save(self, obj, save_persistent_id=True):
        if not isinstance(obj, Ref):
            return super().save(obj, save_persistent_id)
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)


def dumps(obj, protocol: int) -> bytes:
    import io

    f = io.BytesIO()
    Writer(f, protocol).dump(obj)
    return f.getvalue()


def dataset(data, indices=None) -> Call:
    """A datasets.Dataset as old releases write it: NEWOBJ-like REDUCE, then its __dict__."""
    return Call(
        "copyreg._reconstructor",
        Ref("datasets.arrow_dataset.Dataset"),
        Ref("builtins.object"),
        None,
        state={"_data": data, "_indices": indices, "_info": None, "_split": None},
    )


def in_memory(table) -> Call:
    return Call(
        "copyreg._reconstructor",
        Ref("datasets.table.InMemoryTable"),
        Ref("builtins.object"),
        None,
        state={"table": table},
    )


def _attacks(tmp: Path, marker: Path) -> dict:
    """name: (pickle bytes, a fragment of the one-line refusal)."""
    cmd = f"touch {marker}"
    py = f"open({str(marker)!r}, 'w').close()"
    script = tmp / "payload.py"
    script.write_text(py + "\n")
    evil_npy = tmp / "evil.npy"
    with open(evil_npy, "wb") as f:  # an object .npy whose pickle runs the command
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|O", "fortran_order": False, "shape": (1,)}
        )
        f.write(dumps([Call("os.system", cmd)], 2))
    victim = tmp / "victim.arrow"
    victim.write_bytes(b"keep me")
    good = pa.table({"text": ["fine news"]})
    system = Call("os.system", cmd)
    A = {
        # builtins
        "builtins.eval": (
            Call("builtins.eval", f"__import__('os').system({cmd!r})"),
            "builtins.eval",
        ),
        "builtins.exec": (Call("builtins.exec", py), "builtins.exec"),
        "builtins.compile+exec": (Call("builtins.compile", py, "x", "exec"), "builtins.compile"),
        "builtins.open": (Call("builtins.open", str(marker), "w"), "builtins.open"),
        "io.open": (Call("io.open", str(marker), "w"), "io.open"),
        "builtins.__import__": (
            Call(Call("builtins.getattr", Call("builtins.__import__", "os"), "system"), cmd),
            "builtins.getattr",
        ),
        "__import__ first": (Call("builtins.__import__", "os"), "builtins.__import__"),
        "__builtin__.eval (py2 name)": (
            Call("__builtin__.eval", f"__import__('os').system({cmd!r})"),
            "builtins.eval",
        ),
        "builtins.object.__subclasses__ (dotted)": (
            Call("builtins:object.__subclasses__"),
            "builtins.object.__subclasses__",
        ),
        # getattr from allowed names only: Dataset -> __new__.__globals__ -> importlib -> os.system
        "getattr from allowed names": (_getattr_chain(cmd, "builtins.getattr"), "builtins.getattr"),
        "getattr from allowed names (py2 name)": (
            _getattr_chain(cmd, "__builtin__.getattr"),
            "builtins.getattr",
        ),
        # operator, functools
        "operator.attrgetter": (
            Call(Call("operator.attrgetter", "system"), Call("importlib.import_module", "os")),
            "operator.attrgetter",
        ),
        "operator.methodcaller": (
            Call(
                Call("operator.methodcaller", "system", cmd), Call("importlib.import_module", "os")
            ),
            "operator.methodcaller",
        ),
        "functools.partial": (
            Call(Call("functools.partial", Ref("os.system"), cmd)),
            "functools.partial",
        ),
        "functools.reduce": (
            Call("functools.reduce", Ref("builtins.exec"), [py, {}]),
            "functools.reduce",
        ),
        # the shells
        "os.system": (system, "os.system"),
        "posix.system": (Call("posix.system", cmd), "posix.system"),
        "nt.system": (Call("nt.system", cmd), "nt.system"),
        "os.popen": (Call("os.popen", cmd), "os.popen"),
        "os.execv": (Call("os.execv", "/bin/touch", ["touch", str(marker)]), "os.execv"),
        "subprocess.call": (Call("subprocess.call", ["touch", str(marker)]), "subprocess.call"),
        "subprocess.Popen": (Call("subprocess.Popen", ["touch", str(marker)]), "subprocess.Popen"),
        "subprocess.run": (Call("subprocess.run", ["touch", str(marker)]), "subprocess.run"),
        "subprocess.check_output": (
            Call("subprocess.check_output", ["touch", str(marker)]),
            "subprocess.check_output",
        ),
        "runpy.run_path": (Call("runpy.run_path", str(script)), "runpy.run_path"),
        "importlib.import_module": (
            Call("importlib.import_module", "os"),
            "importlib.import_module",
        ),
        "codecs.open": (Call("codecs.open", str(marker), "w"), "codecs.open"),
        "nested pickle.loads": (Call("pickle.loads", dumps(system, 2)), "pickle.loads"),
        "nested _pickle.loads": (Call("_pickle.loads", dumps(system, 2)), "_pickle.loads"),
        # numpy
        "numpy.load": (Call("numpy.load", str(evil_npy), None, True), "numpy.load"),
        "numpy.lib.npyio.load": (
            Call("numpy.lib.npyio.load", str(evil_npy), None, True),
            "numpy.lib.npyio.load",
        ),
        "numpy.frombuffer": (Call("numpy.frombuffer", b"\0" * 8, "O"), "numpy.frombuffer"),
        "numpy.fromfile": (Call("numpy.fromfile", str(victim)), "numpy.fromfile"),
        "object array carrying a payload": (np.array([system, 1], dtype=object), "dtype"),
        "object array of allowed things": (
            np.array([bytearray(b"x"), 1], dtype=object),
            "dtype('O')",
        ),
        "void dtype flagged as objects": (
            Call("numpy.dtype", "V8", False, True, state=(3, "|", None, None, None, 8, 1, 63)),
            "dtype('V8')",
        ),
        "dtype of a class": (
            Call("numpy.dtype", Ref("builtins.object"), False, True),
            "numpy.dtype(type)",
        ),
        "ndarray called directly": (Call("numpy.ndarray", (4,), "O"), "not a readable pickle"),
        "_reconstruct of a stand-in": (
            Call(
                "numpy.core.multiarray._reconstruct",
                Ref("datasets.arrow_dataset.Dataset"),
                (0,),
                b"b",
            ),
            "_reconstruct",
        ),
        "_frombuffer of objects": (
            Call("numpy._core.numeric._frombuffer", bytearray(8), np.dtype("O"), (1,), "C"),
            "dtype",
        ),
        # pyarrow calls taking a path or a callable
        "pyarrow.lib.memory_map": (
            Call("pyarrow.lib.memory_map", str(victim)),
            "pyarrow.lib.memory_map",
        ),
        "pyarrow.lib.OSFile": (Call("pyarrow.lib.OSFile", str(marker), "w"), "pyarrow.lib.OSFile"),
        "pyarrow.lib.create_memory_map": (
            Call("pyarrow.lib.create_memory_map", str(marker), 8),
            "pyarrow.lib.create_memory_map",
        ),
        "pyarrow.ipc.open_file": (
            Call("pyarrow.ipc.open_file", str(victim)),
            "pyarrow.ipc.open_file",
        ),
        "pyarrow.parquet.read_table": (
            Call("pyarrow.parquet.read_table", str(victim)),
            "pyarrow.parquet.read_table",
        ),
        "pyarrow.compute.register_scalar_function": (
            Call(
                "pyarrow.compute.register_scalar_function",
                Ref("os.system"),
                "f",
                {},
                {},
                pa.int64(),
            ),
            "pyarrow.compute.register_scalar_function",
        ),
        "pyarrow field's globals (dotted)": (
            Call("pyarrow.lib:field.__globals__"),
            "pyarrow.lib.field.__globals__",
        ),
        # datasets
        "datasets.load_from_disk": (
            Call("datasets.load_from_disk", str(tmp)),
            "datasets.load_from_disk",
        ),
        "MemoryMappedTable with replays": (
            dataset(
                Call(
                    "copyreg._reconstructor",
                    Ref("datasets.table.MemoryMappedTable"),
                    Ref("builtins.object"),
                    None,
                    state={"path": str(victim), "replays": [("__class__", (), {})]},
                )
            ),
            "memory-mapped datasets table",
        ),
        "InMemoryTable pointing at a file (2.14 would delete it)": (
            dataset(
                Call(
                    "copyreg._reconstructor",
                    Ref("datasets.table.InMemoryTable"),
                    Ref("builtins.object"),
                    None,
                    state={"path": str(victim)},
                )
            ),
            "temporary Arrow file",
        ),
        "Dataset.from_file (dotted)": (
            Call("datasets.arrow_dataset:Dataset.from_file", str(victim)),
            "Dataset.from_file",
        ),
        "payload inside _indices": (dataset(in_memory(good), indices=system), "os.system"),
        "payload inside one block": (
            dataset(
                Call(
                    "copyreg._reconstructor",
                    Ref("datasets.table.ConcatenationTable"),
                    Ref("builtins.object"),
                    None,
                    state={"blocks": [[in_memory(good)], [in_memory(system)]], "schema": None},
                )
            ),
            "os.system",
        ),
        "string array whose offsets point past its bytes": (
            dataset(
                in_memory(
                    Call(
                        "pyarrow.lib._reconstruct_table",
                        [Call("pyarrow.lib.chunked_array", [_bad_offsets_array()], pa.string())],
                        pa.schema([("text", pa.string())]),
                    )
                )
            ),
            "Offset",
        ),
        "payload nested in a dict": ({"text": ["x"], "label": system}, "os.system"),
        "payload as a column": (
            dataset(in_memory(Call("pyarrow.lib._reconstruct_table", [system], None))),
            "os.system",
        ),
        "_reconstructor of bytearray": (
            Call(
                "copyreg._reconstructor", Ref("builtins.bytearray"), Ref("builtins.bytearray"), b"x"
            ),
            "copyreg._reconstructor",
        ),
        "_codecs.encode with another codec": (
            Call("_codecs.encode", "x", "rot13"),
            "_codecs.encode",
        ),
        "pandas DataFrame": (
            Call("pandas.core.frame.DataFrame", {"text": ["x"]}),
            "pickled pandas DataFrame",
        ),
    }
    out = {
        name: (dumps(obj, 2 + i % 4), fragment)
        for i, (name, (obj, fragment)) in enumerate(A.items())
    }
    for protocol in range(6):  # the classic: os.system through __reduce__, at every protocol
        out[f"os.system at protocol {protocol}"] = (dumps(system, protocol), "os.system")
        out[f"payload in a dataset at protocol {protocol}"] = (
            dumps(dataset(in_memory(good), system), protocol),
            "os.system",
        )
    out.update(_raw_attacks(cmd))
    return out


def _bad_offsets_array() -> Call:
    """A 2-row string array claiming 1 MB of text in a 4-byte buffer (an out-of-bounds read)."""
    offsets = pa.py_buffer(np.array([0, 2, 1 << 20], dtype=np.int32).tobytes())
    return Call(
        "pyarrow.lib._restore_array",
        (pa.string(), 2, 0, 0, [None, offsets, pa.py_buffer(b"abcd")], [], None),
    )


def _getattr_chain(cmd: str, getattr_name: str) -> Call:
    """os.system(cmd) reached with getattr and allowed names only (what a wider list would run)."""
    g = lambda obj, name: Call(getattr_name, obj, name)  # noqa: E731
    globals_ = g(g(Ref("datasets.arrow_dataset.Dataset"), "__new__"), "__globals__")
    importlib_ = Call(g(globals_, "get"), "importlib")
    os_ = Call(g(importlib_, "import_module"), "os")
    return Call(g(os_, "system"), cmd)


def _raw_attacks(cmd: str) -> dict:
    """Opcode-level tricks: INST, OBJ, memo, extension codes, persistent ids."""
    c = cmd.encode()
    return {
        "INST opcode (protocol 0)": (b"(S'" + c + b"'\nios\nsystem\n.", "os.system"),
        "OBJ opcode (protocol 1)": (
            b"(cposix\nsystem\nX" + len(c).to_bytes(4, "little") + c + b"o.",
            "posix.system",
        ),
        "memo: GET of an unset slot": (
            b"\x80\x02h\x05X" + len(c).to_bytes(4, "little") + c + b"\x85R.",
            "not a readable pickle",
        ),
        "memo: allowed name then a refused one in the same slot": (
            b"\x80\x02c__builtin__\nbytearray\nq\x000cposix\nsystem\nq\x000h\x00X"
            + len(c).to_bytes(4, "little")
            + c
            + b"\x85R.",
            "posix.system",
        ),
        "persistent id": (b"\x80\x02X\x01\x00\x00\x00xQ.", "not a readable pickle"),
        "extension code": (
            b"\x80\x02\x82\xf0X" + len(c).to_bytes(4, "little") + c + b"\x85R.",
            "posix.system",
        ),
    }


@pytest.fixture
def attack_files(tmp_path):
    marker = tmp_path / "pwned"
    copyreg.add_extension("posix", "system", 240)  # so the extension-code attack names it
    try:
        yield _attacks(tmp_path, marker), marker, tmp_path
    finally:
        copyreg.remove_extension("posix", "system", 240)


def test_there_are_forty_or_more_attacks(attack_files):
    attacks, _, _ = attack_files
    assert len(attacks) >= 40


def test_attacks_are_refused_by_load_table_and_run_nothing(attack_files):
    attacks, marker, tmp = attack_files
    for name, (data, fragment) in attacks.items():
        path = tmp / "attack.pkl"
        path.write_bytes(data)
        with pytest.raises(UserError) as e:
            load_table(str(path), DataConfig(), need_labels=False)
        assert not marker.exists(), name  # nothing ran
        assert (tmp / "victim.arrow").read_bytes() == b"keep me", name  # nothing deleted
        message = str(e.value)
        assert fragment in message and message.startswith(f"{path}: ") and "\n" not in message, (
            name,
            message,
        )


def test_attacks_through_predict_exit_2_with_one_line_and_no_output(two_runs, attack_files, capsys):
    run, _ = two_runs
    attacks, marker, tmp = attack_files
    out = tmp / "submission.csv"
    for i, (name, (data, fragment)) in enumerate(attacks.items()):
        path = tmp / f"attack-{i}.pkl"
        path.write_bytes(data)
        assert_fails_cleanly(
            ["predict", str(run), "--input", str(path), "--output", str(out)],
            [path.name, fragment],
            capsys,
        )
        assert not out.exists() and not marker.exists(), name


def test_a_wider_allow_list_would_run_the_getattr_chain(attack_files, monkeypatch):
    """The gadget is real: with builtins.getattr allowed it runs the command (so the pin matters)."""
    _, marker, tmp = attack_files
    import lorafit.pickles as pickles

    monkeypatch.setitem(pickles.ALLOWED, ("builtins", "getattr"), "a mistake")
    data = dumps(_getattr_chain(f"touch {marker}", "builtins.getattr"), 4)
    unpickle(data)
    assert marker.exists()


def test_the_attack_commands_would_really_run(tmp_path):
    """Control: the same bytes through plain pickle.loads do create the marker."""
    marker = tmp_path / "pwned"
    pickle.loads(dumps(Call("os.system", f"touch {marker}"), 2))
    assert marker.exists()
    marker.unlink()
    pickle.loads(dumps(Call("posix.system", f"touch {marker}"), 0))
    assert marker.exists() and os.name == "posix"


# ------------------------------------------------------------------ what mutation testing found
# (scripts/mutation.sh pickles; docs/project/mutation.md lists the survivors judged equivalent)


def _read(tmp_path: Path, obj, protocol: int = 4):
    from lorafit.pickles import read_pickle_table

    path = tmp_path / "data.pkl"
    path.write_bytes(dumps(obj, protocol))
    return path, read_pickle_table(path)


def _refusal(tmp_path: Path, obj, protocol: int = 4) -> tuple[Path, str]:
    from lorafit.pickles import read_pickle_table

    path = tmp_path / "data.pkl"
    path.write_bytes(dumps(obj, protocol))
    with pytest.raises(UserError) as e:
        read_pickle_table(path)
    return path, str(e.value)


def _with_state(kind: str, state) -> Call:
    return Call("copyreg._reconstructor", Ref(kind), Ref("builtins.object"), None, state=state)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numeric_arrays_round_trip_exactly(protocol):
    """Shapes, memory order and byte order survive (protocol 5: _frombuffer; 2-4: _reconstruct)."""
    arrays = [
        np.arange(5, dtype=np.int64),
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        np.asfortranarray(np.arange(24, dtype=np.float64).reshape(2, 3, 4)),
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([1, 2, 1 << 40], dtype=">i8"),  # big-endian: the dtype's state must apply
        np.array([0.5, -2.0], dtype=">f4"),
        np.array([True, False, True]),
    ]
    for a in arrays:
        data = pickle.dumps(a, protocol=protocol)
        b, _ = unpickle(data)
        assert b.dtype == pickle.loads(data).dtype  # numpy's own reader may make >i8 native
        assert b.shape == a.shape and np.array_equal(a, b), (a, b)
        assert b.tolist() == a.tolist() and b.flags.f_contiguous == a.flags.f_contiguous
    assert np.dtype("int64").str == np.dtype(np.int64).newbyteorder("=").str  # built-in untouched


def test_latin_1_bytes_are_read_under_either_spelling():
    for encoding in ("latin1", "latin-1"):
        obj, used = unpickle(dumps(Call("_codecs.encode", "caf\xe9 \xff", encoding), 2))
        assert obj == b"caf\xe9 \xff" and used == {("_codecs", "encode")}


def test_reconstructor_makes_only_stand_ins_over_object():
    from lorafit.pickles import Refused

    for cls, base in [
        ("numpy.ndarray", "builtins.object"),
        ("builtins.bytearray", "builtins.object"),
        ("datasets.table.InMemoryTable", "builtins.bytearray"),
    ]:
        with pytest.raises(Refused, match=r"copyreg\._reconstructor"):
            unpickle(dumps(Call("copyreg._reconstructor", Ref(cls), Ref(base), None), 2))


def test_a_pickle_of_something_else_is_named(tmp_path):
    features = _with_state("datasets.features.features.Features", {"text": None})
    path, message = _refusal(tmp_path, features)
    assert (
        message
        == f"{path}: holds a datasets.features.features.Features, expected a datasets.Dataset"
    )
    path, message = _refusal(tmp_path, [1, 2])
    assert message == f"{path}: holds a list, expected a datasets.Dataset"


def test_a_dataset_without_a_table_or_with_a_bare_one_is_refused_by_name(tmp_path):
    path, message = _refusal(tmp_path, _with_state("datasets.arrow_dataset.Dataset", None))
    assert message == f"{path}: holds a datasets.Dataset without an Arrow table (NoneType)"
    bare = pa.table({"text": ["a"]})  # a pyarrow Table where a datasets table belongs
    path, message = _refusal(tmp_path, dataset(bare))
    assert message == f"{path}: holds a datasets.Dataset without an Arrow table (Table)"


def test_a_damaged_dataset_says_what_broke(tmp_path):
    good = pa.table({"text": ["a", "b"]})
    indices = in_memory(pa.table({"indices": pa.array([0, 5], pa.uint64())}))  # row 5 of 2
    path, message = _refusal(tmp_path, dataset(in_memory(good), indices))
    assert message.startswith(f"{path}: a damaged datasets.Dataset (ArrowIndexError: ")
    assert message.endswith("); re-save it") and "out of bounds" in message


def test_errors_are_cut_to_one_line_of_200_characters():
    from lorafit.pickles import _one_line

    assert _one_line(ValueError("two\n  lines")) == "ValueError: two lines"
    exact = ValueError("x" * (200 - len("ValueError: ")))
    assert _one_line(exact) == str(f"ValueError: {exact}") and len(_one_line(exact)) == 200
    over = _one_line(ValueError("z" * (201 - len("ValueError: "))))
    assert over == "ValueError: " + "z" * (197 - len("ValueError: ")) + "..." and len(over) == 200
    long = _one_line(ValueError("y" * 300))
    assert long == "ValueError: " + "y" * (197 - len("ValueError: ")) + "..." and len(long) == 200


def test_slot_state_pairs_are_merged(tmp_path):
    """BUILD states written as (dict, slot dict) for classes with __slots__."""
    table = in_memory(pa.table({"text": ["a", "b", "c"]}))
    order = in_memory(pa.table({"indices": pa.array([2, 0], pa.uint64())}))
    for state, want in [
        (({"_data": table, "_indices": None}, None), ["a", "b", "c"]),
        ((None, {"_data": table, "_indices": order}), ["c", "a"]),
        (({"_data": table}, {"_indices": order}), ["c", "a"]),
    ]:
        _, got = _read(tmp_path, _with_state("datasets.arrow_dataset.Dataset", state))
        assert got.column("text").to_pylist() == want, state


def test_blocks_side_by_side_are_joined_column_by_column(tmp_path):
    """concatenate_datasets(axis=1): a block row of several tables is one table, columns in order."""
    blocks = [
        [
            in_memory(pa.table({"text": ["a", "b"]})),
            in_memory(pa.table({"label": [0, 1]})),
            in_memory(pa.table({"source": ["x", "y"]})),
        ],
        [
            in_memory(pa.table({"text": ["c"]})),
            in_memory(pa.table({"label": [2]})),
            in_memory(pa.table({"source": ["z"]})),
        ],
    ]
    concat = _with_state("datasets.table.ConcatenationTable", {"blocks": blocks, "schema": None})
    _, got = _read(tmp_path, dataset(concat))
    assert got.to_pydict() == {
        "text": ["a", "b", "c"],
        "label": [0, 1, 2],
        "source": ["x", "y", "z"],
    }


def test_a_table_kept_as_record_batches_reads(tmp_path):
    table = pa.table({"text": ["a", "b", "c"], "label": [3, 2, 1]})
    state = {"_batches": table.to_batches(max_chunksize=2), "_schema": table.schema}
    _, got = _read(tmp_path, dataset(_with_state("datasets.table.InMemoryTable", state)))
    assert got.equals(table)
    empty = {"_batches": [], "_schema": table.schema}  # no rows: the schema alone gives the columns
    _, got = _read(tmp_path, dataset(_with_state("datasets.table.InMemoryTable", empty)))
    assert got.schema.equals(table.schema) and got.num_rows == 0


def test_blocks_one_per_row_missing_and_with_an_all_null_column(tmp_path):
    flat = [
        in_memory(pa.table({"text": ["a"]})),
        in_memory(pa.table({"text": ["b"]})),
    ]  # not [[...], [...]]
    _, got = _read(
        tmp_path, dataset(_with_state("datasets.table.ConcatenationTable", {"blocks": flat}))
    )
    assert got.column("text").to_pylist() == ["a", "b"]
    path, message = _refusal(
        tmp_path, dataset(_with_state("datasets.table.ConcatenationTable", {"schema": None}))
    )
    assert message == f"{path}: a ConcatenationTable without blocks; re-save the dataset"
    nulls = pa.table(
        {"text": ["a"], "label": pa.array([None], pa.null())}
    )  # a block whose labels are all missing
    blocks = [[in_memory(nulls)], [in_memory(pa.table({"text": ["b"], "label": [2]}))]]
    _, got = _read(
        tmp_path, dataset(_with_state("datasets.table.ConcatenationTable", {"blocks": blocks}))
    )
    assert got.to_pydict() == {"text": ["a", "b"], "label": [None, 2]}


def test_the_refusals_name_the_fix_in_full(tmp_path):
    temporary = dataset(_with_state("datasets.table.InMemoryTable", {"path": "/tmp/x.arrow"}))
    path, message = _refusal(tmp_path, temporary)
    assert message == (
        f"{path}: its table was saved to a temporary Arrow file on the machine that wrote it "
        "(datasets does that for tables over 4 GiB); save the rows with "
        "ds.to_parquet('test.parquet') and pass that file"
    )
    mapped = dataset(_with_state("datasets.table.MemoryMappedTable", {"path": "/tmp/x.arrow"}))
    path, message = _refusal(tmp_path, mapped)
    assert message == (
        f"{path}: a memory-mapped datasets table: the pickle holds only the path of an Arrow file "
        "on the machine that wrote it, not the rows; there, re-save the rows themselves, e.g. "
        "ds.to_parquet('test.parquet') (lorafit reads .parquet), or pickle "
        "Dataset.from_dict(ds.to_dict())"
    )
    path, message = _refusal(tmp_path, Call("pandas.core.frame.DataFrame", {"text": ["x"]}))
    assert message == (
        f"{path}: a pickled pandas DataFrame, which lorafit does not unpickle (reading one runs "
        "pandas code from the file); save it with df.to_parquet('test.parquet') or "
        "df.to_csv('test.csv', index=False) and pass that file"
    )
    path, message = _refusal(tmp_path, Call("os.system", "true"))
    assert message == (
        f"{path}: refused to load os.system; only a pickled datasets.Dataset is accepted "
        "(nothing was run)"
    )
    path, message = _refusal(
        tmp_path, _with_state("datasets.table.ConcatenationTable", {"blocks": []})
    )
    assert (
        message == f"{path}: holds a datasets.table.ConcatenationTable, expected a datasets.Dataset"
    )
    path, message = _refusal(
        tmp_path, dataset(_with_state("datasets.table.ConcatenationTable", {"blocks": []}))
    )
    assert message == f"{path}: a ConcatenationTable without blocks; re-save the dataset"


def test_python_2_and_numpy_1_names_map_whole():
    assert canonical_name("__builtin__", "xrange") == ("builtins", "range")  # a renamed name
    assert canonical_name("UserDict", "UserDict") == ("collections", "UserDict")
    assert canonical_name("copy_reg", "_reconstructor") == (
        "copyreg",
        "_reconstructor",
    )  # a renamed module
    assert canonical_name("numpy.core", "multiarray") == ("numpy._core", "multiarray")
    assert canonical_name("numpy.core.numeric", "_frombuffer") == (
        "numpy._core.numeric",
        "_frombuffer",
    )
    assert canonical_name("numpy.coreutils", "x") == ("numpy.coreutils", "x")


def test_the_stand_ins_are_named_after_what_they_replace():
    from lorafit.pickles import RESOLVERS, _Kept, _kept, _resolvers

    made = _kept("datasets.x.Y")
    assert (
        issubclass(made, _Kept)
        and made.__name__ == "Kept[datasets.x.Y]"
        and made.original == "datasets.x.Y"
    )
    fresh = _resolvers()
    assert fresh.keys() == RESOLVERS.keys()
    for (module, name), resolved in fresh.items():
        if module.startswith("datasets."):
            assert issubclass(resolved, _Kept), (module, name)
            want = "datasets.Dataset" if name == "Dataset" else f"{module}.{name}"
            assert resolved.original == want, (module, name, resolved.original)
    names = {k for k in ALLOWED if k[0].startswith("datasets.")}
    assert names <= fresh.keys()

"""`lorafit cache`: the stores a real run leaves (an activation cache, a teacher's logits) are
listed with their size, rows and last use; a reuse counts as a use; removal takes keys or an
age, refuses an unknown key before removing anything, and leaves every other store alone."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from lorafit.caches import format_size, format_table, list_caches, remove_caches
from lorafit.cli import main
from lorafit.errors import UserError

DAY = 86400


def _train_on_cache(tiny_overrides, cache: Path, *extra) -> None:
    args = [
        *tiny_overrides,
        "lora.layers=1",
        "train.cache_activations=true",
        f"train.cache_dir={cache}",
        *extra,
    ]
    assert main(["train", *args]) == 0


def _age(store: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(store / "meta.json", (then, then))


def _listing(cache: Path, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["cache", "--dir", str(cache), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_runs_cache_is_listed_and_a_reuse_counts_as_a_use(
    tiny_overrides, tiny_model, tmp_path, capsys
):
    cache = tmp_path / "c"
    _train_on_cache(tiny_overrides, cache)
    (row,) = _listing(cache, capsys)
    assert row["kind"] == "activations" and row["rows"] == 200  # 240 rows less 40 validation
    store = Path(row["path"])
    dtype = json.loads((store / "meta.json").read_text())["dtype"]  # fp16 under mixed precision
    assert row["what"] == f"{tiny_model}, layers 0-0, {dtype}"
    assert store.parent == cache and row["key"] == store.name
    on_disk = sum(f.stat().st_size for f in store.iterdir())
    assert on_disk <= row["size_bytes"] < on_disk + 64 * 1024  # whole blocks
    _age(store, 40)
    assert list_caches(cache)[0].last_used < time.time() - 39 * DAY
    _train_on_cache(tiny_overrides, cache)  # reuses it
    assert list_caches(cache)[0].last_used > time.time() - 600
    assert main(["cache", "--dir", str(cache), "--older-than", "30"]) == 0
    assert store.is_dir()  # used just now
    capsys.readouterr()
    assert main(["cache", "--dir", str(cache)]) == 0
    table = capsys.readouterr().out
    assert f"{row['key']}: {tiny_model}, layers 0-0, {dtype}" in table and "1 stores" in table


@pytest.fixture(scope="module")
def real_store(tiny_model, small_csv, tmp_path_factory) -> Path:
    """An activation cache a real run built (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("caches")
    overrides = [
        f"model.name={tiny_model}",
        f"data.train={small_csv}",
        "data.val_size=40",
        "model.max_length=64",
        "train.max_steps=2",
        "train.eval_every=2",
        "train.batch_size=16",
        "log.progress=false",
        f"run.dir={root / 'runs'}",
    ]
    _train_on_cache(overrides, root / "c")
    (store,) = (root / "c").iterdir()
    return store


def test_removal_by_age_or_key_leaves_every_other_store(real_store, tmp_path, capsys):
    cache = tmp_path / "c"
    old, new = cache / ("a" * 64), cache / ("b" * 64)  # two keys, as two configs would make
    for store in (old, new):
        shutil.copytree(real_store, store)
    _age(old, 40)
    _age(new, 29)
    broken = cache / f".{new.name}.partial-host-1"  # an interrupted build, long ago
    broken.mkdir()
    (broken / "states.bin").write_bytes(b"\0" * 100)
    os.utime(broken, (time.time() - 50 * DAY,) * 2)
    teacher = cache / "teacher" / ("c" * 64)  # a teacher's store, used today
    teacher.mkdir(parents=True)
    (teacher / "meta.json").write_text(json.dumps({"rows": 5, "teacher": ["runs/t", "runs/u"]}))
    kinds = {r["key"]: (r["kind"], r["what"]) for r in _listing(cache, capsys)}
    assert kinds[broken.name][0] == "incomplete" and kinds[teacher.name] == (
        "teacher",
        "runs/t, runs/u",
    )
    assert kinds[old.name][0] == kinds[new.name][0] == "activations" and len(kinds) == 4

    capsys.readouterr()
    assert main(["cache", "--dir", str(cache), "--older-than", "30", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (
        f"would remove activations {old.name}" in out
        and f"would remove incomplete {broken.name}" in out
    )
    assert out.count("would remove") == 2 and "2 stores" in out and "(dry run)" in out
    assert old.is_dir() and broken.is_dir()
    gone = remove_caches(cache, older_than_days=30)
    assert sorted(s.key for s in gone) == sorted([old.name, broken.name])
    assert not old.exists() and not broken.exists() and new.is_dir() and teacher.is_dir()
    assert sorted(p.name for p in cache.iterdir()) == sorted([new.name, "teacher"])  # no trash left
    assert [s.key for s in remove_caches(cache, older_than_days=28.9)] == [new.name]

    assert main(["cache", "--dir", str(cache), teacher.name, "nosuchkey"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no store named nosuchkey" in err
    assert teacher.is_dir()  # refused before removing anything
    assert main(["cache", "--dir", str(cache), teacher.name]) == 0
    assert "removed teacher " + teacher.name in capsys.readouterr().out
    assert not teacher.exists() and list_caches(cache) == []


def test_the_listing_is_newest_use_first_and_sizes_are_whole_blocks(real_store, tmp_path):
    for days, name in ((3, "x"), (1, "y"), (2, "z")):
        shutil.copytree(real_store, tmp_path / name)
        _age(tmp_path / name, days)
    stores = list_caches(tmp_path)
    assert [s.key for s in stores] == ["y", "z", "x"]
    assert stores[0].rows == 200 and stores[0].size % 512 == 0
    assert stores[0].size >= sum(f.stat().st_size for f in real_store.iterdir())


def test_nothing_to_remove_said_is_refused_and_a_missing_folder_lists_nothing(tmp_path, capsys):
    assert list_caches(tmp_path / "none") == []
    assert main(["cache", "--dir", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.strip() == "no stores"
    (tmp_path / "file").write_text("x")
    assert main(["cache", "--dir", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_odd_stores_are_listed_not_fatal(real_store, tmp_path):
    """A damaged meta.json, a store set aside as damaged (meta.json intact) and an old
    format's meta.json without the listing's keys."""
    damaged, aside, old = (
        tmp_path / ("d" * 64),
        tmp_path / f".{'e' * 64}.bad-host-7",
        tmp_path / ("f" * 64),
    )
    for store in (damaged, aside):
        shutil.copytree(real_store, store)
    (damaged / "meta.json").write_text("{not json")
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"key": old.name}))
    nameless = tmp_path / "teacher" / "t1"  # a teacher store whose meta.json names none
    nameless.mkdir(parents=True)
    (nameless / "meta.json").write_text(json.dumps({"rows": 3}))
    _age(old, 2)
    stores = {s.key: s for s in list_caches(tmp_path)}
    assert (stores.pop("t1").what, len(stores)) == ("?", 3)
    assert sorted(stores) == sorted([damaged.name, aside.name, old.name])
    assert stores[damaged.name].kind == stores[aside.name].kind == "incomplete"
    assert stores[damaged.name].rows is None and stores[aside.name].rows is None
    assert stores[aside.name].what == "an interrupted build or a damaged store"
    assert (stores[old.name].kind, stores[old.name].what, stores[old.name].rows) == (
        "activations",
        "?, layers 0-?, ?",
        None,
    )
    table = format_table(list(stores.values()))
    lines = table.splitlines()
    assert lines[0].split() == ["kind", "size", "last", "used", "rows", "key:", "what"]
    line = next(x for x in lines if old.name in x)
    blocks = sum(os.lstat(f).st_blocks * 512 for f in old.iterdir())  # whole blocks, as du counts
    assert line.split()[:3] == ["activations", *format_size(blocks).split()]
    assert line.split()[5] == f"{old.name}:"  # no rows: an empty column, the key next
    assert lines[-1].startswith("3 stores, ")
    real = next(
        x for x in format_table(list_caches(real_store.parent)).splitlines() if real_store.name in x
    )
    assert real.split()[5] == "200"  # the rows column
    row = stores[old.name].row()
    assert row["last_used"] == time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(stores[old.name].last_used)
    )
    assert len(row["last_used"]) == 16


@pytest.mark.parametrize(
    "n, shown",
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1_000_000, "1.0 MB"),
        (1_500_000, "1.5 MB"),
        (1_000_000_000, "1.0 GB"),
        (2_000_000_000, "2.0 GB"),
    ],
)
def test_sizes_read_in_decimal_units(n, shown):
    assert format_size(n) == shown


def test_keys_and_an_age_together_and_age_zero(real_store, tmp_path, capsys):
    for name in ("k1", "k2", "k3"):
        shutil.copytree(real_store, tmp_path / name)
    _age(tmp_path / "k2", 5 + 3 / DAY)  # 3 s past the age
    gone = remove_caches(tmp_path, keys=["k1"], older_than_days=5)  # both asks, each store once
    assert sorted(s.key for s in gone) == ["k1", "k2"] and [
        s.key for s in list_caches(tmp_path)
    ] == ["k3"]
    assert [s.key for s in remove_caches(tmp_path, older_than_days=0)] == ["k3"]  # 0: everything
    assert main(["cache", "--dir", str(tmp_path), "--older-than", "-1"]) == 2
    assert (
        capsys.readouterr().err == "lorafit: error: --older-than -1.0: give a number of days >= 0\n"
    )
    with pytest.raises(UserError) as e:
        remove_caches(tmp_path)
    assert (
        str(e.value)
        == "lorafit cache: say what to remove: KEY... (from the listing) or --older-than DAYS"
    )
    with pytest.raises(UserError) as e:
        remove_caches(tmp_path, keys=["k9"])
    assert (
        str(e.value)
        == f"lorafit cache: no store named k9 in {tmp_path}; `lorafit cache` lists them"
    )


def test_without_a_folder_the_default_cache_folder_is_listed(real_store, tmp_path, monkeypatch):
    shutil.copytree(real_store, tmp_path / "env" / "k")
    monkeypatch.setenv("LORAFIT_CACHE_DIR", str(tmp_path / "env"))
    assert [s.key for s in list_caches()] == ["k"]

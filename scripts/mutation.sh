#!/usr/bin/env bash
# Mutation testing (mutmut) of the code where a silent bug costs users most.
#
#     scripts/mutation.sh [module ...]     # default: pickles checkpoint params model fastpath caches cores
#
# e.g. `scripts/mutation.sh pickles params`, `scripts/mutation.sh search data.readers`. For each
# MODULE it mutates src/lorafit/MODULE.py (a dotted name for a module in a subpackage:
# data.readers -> src/lorafit/data/readers.py; a subpackage's name, e.g. search, mutates every
# .py file in src/lorafit/search/) one small change at a time (`<=` -> `<`, a constant, a
# dropped argument, ...) and runs that
# module's FAST tests against every mutant: the test files and deselections listed under
# [tool.lorafit-mutation] in pyproject.toml, with `-m "not slow"` and the other [tool.mutmut]
# settings; for a module listed under [tool.lorafit-mutation.functions], only those functions'
# mutants (all of them, every run; in a subpackage named with their module: study.open_study).
# A mutant is killed when a test fails. At the end it prints, per module,
# killed / survived / no tests / timeout / checked and the share killed, and lists the survivors;
# see one with `cd $MUTATION_DIR/MODULE && mutmut show NAME`. The survivors judged equivalent
# (no test can tell them apart) are listed in docs/project/mutation.md.
#
# Each module runs in its own work folder, $MUTATION_DIR/MODULE (default
# ${TMPDIR:-/tmp}/lorafit-mutation/MODULE): a copy of src/, tests/, configs/, docs/, README.md, mkdocs.yml and pyproject.toml with that
# module's settings, and mutmut's mutants/ folder. A second run tests the mutants of changed
# functions and re-tests the earlier survivors (a new test may kill them). Environment:
#   MUTATION_DIR          the work folders' parent (default ${TMPDIR:-/tmp}/lorafit-mutation)
#   MUTATION_JOBS         mutants tested at once (mutmut --max-children; default 1)
#   MUTATION_FRESH=1      forget earlier results and test every mutant again
#   LORAFIT_SHARED_DATA   the shared data folder (default ../shared beside the checkout)
#   MUTATION_TOY_DIR      where the tests' tiny model is kept between mutants (default
#                         $MUTATION_DIR/MODULE/toy; tests/conftest.py reads LORAFIT_TEST_TOY_DIR)
# A module's test selection with `-k` deselects every test whose name holds one of its words
# (`not predict` also drops `test_..._predict_...`): name a test written for a survivor so that
# the selection keeps it. Installs mutmut (>=3.8) with pip if it is missing. Mutants run in workers forked from a fork
# server (process_isolation = "forkserver": torch is not fork-safe) that has imported the tests
# and lorafit once, so module-level code (tables built at import) runs unmutated: tests that call
# such functions directly are what check them.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${MUTATION_DIR:-${TMPDIR:-/tmp}/lorafit-mutation}"
JOBS="${MUTATION_JOBS:-1}"
export LORAFIT_SHARED_DATA="${LORAFIT_SHARED_DATA:-$(cd "$REPO/.." && pwd)/shared}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if ! python -c "import mutmut" 2>/dev/null; then
  python -m pip install --quiet --disable-pip-version-check "mutmut>=3.8"
fi

modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  modules=(pickles checkpoint params model fastpath caches cores)
fi

summary=()
for module in "${modules[@]}"; do
  dir="$WORK/$module"
  mkdir -p "$dir"
  # the copy: src/, tests/, configs/, docs/, pyproject.toml, README.md, mkdocs.yml (tests read
  # the configs, the README and the site's sources; mutants/ is kept for incremental runs)
  rm -rf "$dir/src" "$dir/tests" "$dir/configs" "$dir/docs"
  cp -r "$REPO/src" "$REPO/tests" "$REPO/configs" "$REPO/docs" "$REPO/README.md" "$REPO/mkdocs.yml" "$dir/"
  find "$dir/src" "$dir/tests" -name __pycache__ -prune -exec rm -rf {} +
  python - "$REPO/pyproject.toml" "$dir" "$module" <<'PY'
import json
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import toml as tomllib  # mutmut depends on it there

source, work, module = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
text = source.read_text(encoding="utf-8")
table = (tomllib.loads(text).get("tool") or {}).get("lorafit-mutation") or {}
functions = table.pop("functions", {})
if module not in table:
    sys.exit(f"scripts/mutation.sh: no module {module!r} under [tool.lorafit-mutation] in "
             f"{source}; choose from {', '.join(sorted(table))}")
# a module (data.readers -> data/readers.py) or a whole subpackage (search -> search/*.py)
rel = module.replace(".", "/")
package = (work / "src" / "lorafit" / rel).is_dir()
if not package and not (work / "src" / "lorafit" / f"{rel}.py").is_file():
    sys.exit(f"scripts/mutation.sh: {module}: neither src/lorafit/{rel}.py nor a package src/lorafit/{rel}/")
target = f"src/lorafit/{rel}/*" if package else f"src/lorafit/{rel}.py"
# where mutmut keeps the results (one .meta per mutated file), read by the shell below
meta = f"mutants/src/lorafit/{rel}/*.py.meta" if package else f"mutants/src/lorafit/{rel}.py.meta"
(work / "mutation-meta.txt").write_text(meta, encoding="utf-8")


def glob_of(name: str) -> str:
    # [tool.lorafit-mutation.functions]: only these functions' mutants (mutmut names them so):
    # a function `f` -> x_f__mutmut_N; a method `Class.f` -> xǁClassǁf__mutmut_N
    owner, _, function = name.rpartition(".")
    if owner:
        return f"lorafit.{module}.xǁ{owner}ǁ{function}__mutmut_*"
    return f"lorafit.{module}.x_{function}__mutmut_*"


globs = [glob_of(name) for name in functions.get(module, [])]
(work / "mutation-functions.txt").write_text("".join(g + "\n" for g in globs), encoding="utf-8")
settings = {
    "only_mutate": [target],
    "pytest_add_cli_args_test_selection": table[module],
}
head, sep, mutmut = text.partition("\n[tool.mutmut]\n")
if not sep:
    sys.exit(f"scripts/mutation.sh: {source} has no [tool.mutmut] table")
for key, value in settings.items():
    line = f"{key} = {json.dumps(value)}"
    pattern = re.compile(rf"^{key} = .*$", re.M)
    mutmut = pattern.sub(line, mutmut, count=1) if pattern.search(mutmut) else line + "\n" + mutmut
(work / "pyproject.toml").write_text(head + sep + mutmut, encoding="utf-8")
PY
  meta="$(cat "$dir/mutation-meta.txt")"
  src="${meta#mutants/}"
  echo "== $module: mutating ${src%.meta} in $dir"
  if [ "${MUTATION_FRESH:-0}" = 1 ]; then rm -rf "$dir/mutants"; fi
  again=0
  if compgen -G "$dir/$meta" >/dev/null; then again=1; fi
  # mutmut keeps the map of which test runs which function from its first run: tests written
  # since would never meet the survivors they were written for. Built again each run.
  rm -f "$dir/mutants/mutmut-stats.json"
  # the tests' tiny RoBERTa (tests/conftest.py) built once for every mutant's test session
  export LORAFIT_TEST_TOY_DIR="${MUTATION_TOY_DIR:-$dir/toy}"
  run_mutmut() {  # progress on a terminal, the last lines otherwise
    if [ -t 1 ]; then
      (cd "$dir" && mutmut run --max-children "$JOBS" "$@")
    else
      (cd "$dir" && mutmut run --max-children "$JOBS" "$@" 2>&1 | tr '\r' '\n' | grep -v '^⠋\|^⠙\|^⠹\|^⠸\|^⠼\|^⠴\|^⠦\|^⠧\|^⠇\|^⠏' | tail -n 3)
    fi
  }
  mapfile -t only < "$dir/mutation-functions.txt"
  if [ ${#only[@]} -gt 0 ]; then  # some functions only: all their mutants, every time
    echo "   only the ${#only[@]} functions listed under [tool.lorafit-mutation.functions]"
    run_mutmut "${only[@]}" | grep -v '^🎉 \|^🙁 \|^🫥 \|^⏰ \|^🤔 \|^🔇 ' || true  # not the per-mutant list
  else
    run_mutmut
  fi
  if [ "$again" = 1 ] && [ ${#only[@]} -eq 0 ]; then  # earlier survivors, against the current tests
    mapfile -t earlier < <(cd "$dir" && python - "$meta" <<'PY'
import glob
import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

for meta in sorted(glob.glob(sys.argv[1])):
    for key, code in json.loads(Path(meta).read_text())["exit_code_by_key"].items():
        if status_by_exit_code[code] in ("survived", "no tests"):
            print(key)
PY
)
    if [ ${#earlier[@]} -gt 0 ]; then
      echo "   re-testing ${#earlier[@]} earlier survivors"
      run_mutmut "${earlier[@]}" >/dev/null || true
    fi
  fi
  line="$(cd "$dir" && python - "$module" "$meta" "${only[@]}" <<'PY'
import fnmatch
import glob
import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

module = sys.argv[1]
codes = {}
for meta in sorted(glob.glob(sys.argv[2])):  # one per mutated file
    codes.update(json.loads(Path(meta).read_text())["exit_code_by_key"])
if sys.argv[3:]:  # some functions only
    codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, g) for g in sys.argv[3:])}
names = {"killed": [], "survived": [], "no tests": [], "timeout": [], "not checked": [], "other": []}
for key, code in sorted(codes.items()):
    status = status_by_exit_code[code]  # mutmut's own reading of a worker's exit code
    names[status if status in names else "other"].append(key)
total = len(codes)
checked = total - len(names["not checked"])  # not checked: the run was stopped before them
killed = len(names["killed"]) + len(names["timeout"])
share = f"{100 * killed / checked:.1f}%" if checked else "n/a"
for kind in ("survived", "no tests", "other"):
    for key in names[kind]:
        print(f"    {kind}: {key}", file=sys.stderr)  # other: suspicious, segfault, ...
print(f"{module:<13} killed {len(names['killed']):>4}  survived {len(names['survived']):>4}  "
      f"no tests {len(names['no tests']):>3}  timeout {len(names['timeout']):>3}  "
      f"other {len(names['other']):>3}  checked {checked:>4} of {total:>4}  killed share {share}")
PY
)"
  echo "$line"
  summary+=("$line")
done

echo
echo "mutation testing: killed share = (killed + timeout) / checked, per module"
printf '%s\n' "${summary[@]}"

"""The command line under random input (hypothesis): random `--set` values of every declared key, random flags and
paths. Every command either works (exit 0, or 1 where a check or a unit fails) or exits 2 with one line on stderr
and the folder it ran in unchanged; it never raises (a traceback).

The units of a sweep are not trained here (`executors.execute` is replaced by one that only reports them done): what
is under test is everything up to them - parsing, planning, paths, stores. The smoke runs of every learner x suite
(test_cli.py, test_navigation2d.py, test_omniglot.py) cover the units themselves."""
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import JUNK, valid

from harness import config, executors
from harness.cli import main
from harness.plugins import registry

REG = registry()
SUITES = ["sinusoid", "omniglot", "navigation2d", "cheetah-velocity"]
EXAMPLES = int(os.environ.get("HARNESS_CLI_EXAMPLES", 150))


def paths_in(tmp: Path) -> dict[str, Path]:
    """The kinds of path a command may be given, made in `tmp`."""
    made = {name: tmp / name for name in ("new", "empty", "file", "store", "garbage", "foreign", "dir with space")}
    made["empty"].mkdir()
    made["dir with space"].mkdir()
    made["file"].write_text("a file")
    made["garbage"].mkdir()
    (made["garbage"] / "results.sqlite").write_bytes(b"not a database" * 100)
    made["foreign"].mkdir()
    with sqlite3.connect(made["foreign"] / "results.sqlite") as db:
        db.execute("CREATE TABLE customers (name TEXT)")
    return made


PATH = st.sampled_from(["new", "empty", "file", "store", "garbage", "foreign", "dir with space", "file/below", "",
                        " ", "new/deeper/still"])
STORE = st.one_of(st.just("store"), PATH)  # where a command reads a store: the real one half the time
NAMES = st.lists(st.sampled_from([*sorted(REG.learners), "mam", "", " "]), min_size=1, max_size=3).map(",".join)
NUMBER = st.one_of(st.integers(-5, 30).map(str), JUNK)


@st.composite
def assignment(draw, suite: str, learner: str) -> list[str]:
    """`--set KEY=VALUE` for a key declared for (suite, learner), or an unknown key, with a valid or junk value."""
    keys = config.declarations(REG.suite(suite), REG.learner(learner)) if learner in REG.learners else {}
    key = draw(st.one_of(st.sampled_from(sorted(keys) or ["meta_iterations"]), st.sampled_from(["nope", "", "a b"])))
    value = draw(st.one_of(valid(keys[key]), JUNK) if key in keys else JUNK)
    return ["--set", f"{key}={value}"]


@st.composite
def run_args(draw) -> list[str]:
    suite = draw(st.one_of(st.sampled_from(SUITES), st.just("sinus")))
    learners = draw(NAMES)
    argv = ["run", "--suite", suite, "--learners", learners, "--quiet",
            "--profile", draw(st.sampled_from(["smoke", "quick", "paper", "huge"]))]
    first = learners.split(",")[0]
    for _ in range(draw(st.integers(0, 3))):
        argv += draw(assignment(suite if suite in REG.suites else "sinusoid", first))
    optional = {"--seeds": st.one_of(st.sampled_from(["0", "0,1", "1,1", "-1", str(2**63)]), JUNK),
                "--setting": st.sampled_from(["5way-1shot", "20way-5shot", "7way", ""]),
                "--device": st.sampled_from(["cpu", "cuda", "tpu"]),
                "--jobs": st.one_of(st.sampled_from(["1", "2"]), NUMBER),
                "--executor": st.sampled_from(["inprocess", "pool", "threads"])}
    for flag, values in optional.items():
        if draw(st.booleans()):
            argv += [flag, draw(values)]
    return argv + ["--out", draw(PATH)] + (["--rerun"] if draw(st.booleans()) else [])


@st.composite
def other_args(draw) -> list[str]:
    command = draw(st.sampled_from(["status", "report", "tasks", "check", "data", "list"]))
    if command == "status":
        return ["status", "--out", draw(STORE)] + (["--all"] if draw(st.booleans()) else [])
    if command == "report":
        argv = ["report", "--out", draw(STORE)]
        for flag in ("--results", "--figures"):
            if draw(st.booleans()):
                argv += [flag, draw(PATH)]
        if draw(st.booleans()):
            argv += ["--tables", draw(st.sampled_from(["table2", "table1,table2", "table99", "", ","]))]
        if draw(st.booleans()):
            argv += ["--profile", draw(st.sampled_from(["smoke", "paper", "huge"]))]
        return argv + (["--allow-drop"] if draw(st.booleans()) else [])
    if command == "tasks":
        return ["tasks", "--suite", draw(st.sampled_from(["sinusoid", "sinus"])), "--learner",
                draw(st.sampled_from(["maml", "mam"])), "--shots", draw(NUMBER), "--step", draw(NUMBER),
                "--worst", draw(NUMBER), "--out", draw(STORE)]
    if command == "check":
        return ["check", "--suite", "sinusoid", "--profile", "smoke", "--quiet", "--learners", draw(NAMES),
                "--reference", draw(PATH), "--out", draw(PATH)] + (["--update"] if draw(st.booleans()) else [])
    if command == "data":
        return ["data", "prepare", draw(st.sampled_from(["omniglot", "mnist"])), "--data-dir", draw(PATH),
                "--cache", draw(PATH)]
    return ["list"]


def tree(root: Path) -> list[tuple[str, bytes | bool]]:
    return sorted((str(p.relative_to(root)), p.is_file() and p.read_bytes()) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory) -> Path:
    """A store with a smoke run of MAML on the sinusoid, copied into each example's folder as `store`."""
    out = tmp_path_factory.mktemp("smoke") / "store"
    assert main(["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--quiet",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def units_not_trained():
    """`executors.execute` reporting every unit done without training it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(executors, "execute", lambda sweep, *args: [executors.Outcome(u.run_id, "done")
                                                                  for u in sweep.units])
        yield


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(argv=st.one_of(run_args(), other_args()))
def test_any_command_line_works_or_is_one_line_exit_2_with_nothing_written(argv, smoke_store, units_not_trained,
                                                                          capsys, monkeypatch):
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        paths = paths_in(tmp)
        shutil.copytree(smoke_store, paths["store"])
        monkeypatch.chdir(tmp)
        monkeypatch.setenv("HARNESS_CACHE", str(tmp / "new" / "cache"))
        monkeypatch.setenv("HARNESS_STORE_WAIT_SECONDS", "2")
        before = tree(tmp)
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 1, 2), (argv, code, err)
        assert "Traceback" not in err, (argv, err)
        if code == 2:
            assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
            assert tree(tmp) == before, argv

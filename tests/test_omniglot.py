"""Omniglot on the real data (HARNESS_DATA, as in CI): episodes, models, and a smoke run of every applicable learner
in every setting (5/20-way x 1/5-shot)."""
import json
import re
import sqlite3

import pytest
import torch

from harness.cli import main
from harness.plugins import registry
from harness.runner import RunSpec, prepare
from plugins.omniglot import EPISODES, Omniglot
from plugins.omniglot_data import load_split

REG = registry()
LEARNERS = sorted(name for name, p in REG.learners.items() if p.obj.applies_to(Omniglot))
SETTINGS = list(Omniglot.settings)


def suite(setting="5way-1shot", profile="smoke", **overrides):
    return prepare(RunSpec("omniglot", "maml", profile, setting=setting,
                           overrides={k: str(v) for k, v in overrides.items()}), REG).suite


def test_the_applicable_learners_are_the_papers_and_the_nearest_neighbour_and_oracle_is_refused(capsys):
    assert LEARNERS == ["context", "fomaml", "maml", "nearest-neighbour", "pretrain", "scratch"]
    assert main(["run", "--suite", "omniglot", "--learners", "oracle", "--profile", "smoke"]) == 2
    assert "does not apply" in capsys.readouterr().err
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "5way-1shot, 5way-5shot, 20way-1shot, 20way-5shot" in listing
    oracle = next(line for line in listing.splitlines() if "| oracle" in line)
    assert "omniglot" not in oracle and "sinusoid" in oracle


def test_missing_data_is_one_line_exit_2_before_any_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "nothing"))
    assert main(["run", "--suite", "omniglot", "--learners", "maml", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Omniglot not found: put images_background.zip and images_evaluation.zip" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_episodes_are_n_way_k_shot_of_rotated_characters_of_their_split(omniglot):
    omni = suite("20way-5shot")
    tasks = omni.sample("test", 3, torch.Generator().manual_seed(0), shots=5, query=5)
    assert tasks.support_x.shape == (3, 100, 1, 28, 28) and tasks.query_x.shape == (3, 100, 1, 28, 28)
    assert tasks.ways == 20 and tasks.n_shots == 5
    assert torch.equal(tasks.support_y[0], torch.arange(20).repeat(5))  # shot by shot: 1-shot is a prefix
    assert torch.equal(tasks.shots(1).support_y[0], torch.arange(20))
    images = omni.images("test")
    assert images.shape[0] == len(load_split()["test"])
    for t in range(3):
        x = torch.cat([tasks.support_x[t], tasks.query_x[t]])
        classes = torch.cat([tasks.support_classes[t], tasks.query_classes[t]])
        assert len(set(classes[:20].tolist())) == 20  # distinct classes within an episode
        for image, cls in zip(x, classes.tolist()):
            character, rotation = divmod(cls, 4)  # the class is (character of the split, rotation)
            drawings = torch.rot90(images[character].float(), rotation, dims=(-2, -1))
            assert (drawings == image[0]).all(-1).all(-1).any()  # one of that character's drawings, rotated
        for c in range(20):  # K support and K query drawings, all distinct
            per_class = x[torch.cat([tasks.support_y[t], tasks.query_y[t]]) == c].flatten(1)
            assert len(per_class) == 10 and len(torch.unique(per_class, dim=0)) == 10
    assert omni.pooled_classes == 1100 * 4


def test_models_and_channelwise_context(omniglot):
    for model, first in (("conv", "0.weight"), ("fc", "1.weight")):
        net = suite(model=model).make_model(extra_inputs=3)
        shape = dict(net.named_parameters())[first].shape
        assert shape[1] == (4 if model == "conv" else 4 * 28 * 28)
        x = suite(model=model).append_inputs(torch.zeros(7, 1, 28, 28), torch.tensor([1.0, 2.0, 3.0]))
        assert x.shape == (7, 4, 28, 28) and (x[:, 2] == 2).all()
        assert net(x).shape == (7, 5)
    assert main(["run", "--suite", "omniglot", "--learners", "maml", "--set", "model=mlp"]) == 2


def test_the_context_is_free_image_channels_that_change_the_outputs(omniglot):
    from harness.models import FunctionalModel

    omni = suite()
    net = FunctionalModel(omni, "cpu", context_size=2)
    assert net.params["context"].shape == (2, 28, 28) and net.module[0].in_channels == 3
    x = omni.sample("train", 1, torch.Generator().manual_seed(0), 1, 1).support_x[0]
    spatial = {**net.params, "context": torch.randn(2, 28, 28)}
    assert not torch.allclose(net.forward(spatial, x), net.forward(net.params, x), atol=1e-3)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("learner", LEARNERS)
def test_smoke_run_of_every_learner_and_setting(omniglot, tmp_path, learner, setting):
    out = tmp_path / "out"
    assert main(["run", "--suite", "omniglot", "--setting", setting, "--learners", learner, "--profile", "smoke",
                 "--out", str(out), "--quiet"]) == 0
    config = {**Omniglot.settings[setting], **Omniglot.profiles["smoke"]}
    db = sqlite3.connect(out / "results.sqlite")
    rows = db.execute("SELECT shots, step, value FROM scores").fetchall()
    assert len(rows) == config["eval_tasks"] * (config["eval_steps"] + 1)
    assert {shots for shots, _, _ in rows} == {config["train_shots"]}
    assert all(0 <= value <= 100 for _, _, value in rows)


def test_fully_connected_maml_and_pretrain_with_a_fresh_head(omniglot, tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--suite", "omniglot", "--learners", "maml,pretrain", "--profile", "smoke", "--set",
                 "model=fc", "--out", str(out), "--quiet"]) == 0
    db = sqlite3.connect(out / "results.sqlite")
    (head,) = db.execute("SELECT value FROM details WHERE key = 'fresh_head'").fetchone()
    assert json.loads(head) == ["13.weight", "13.bias"]  # the output layer of 256-128-64-64, zeroed for N ways


def test_tables_1_and_3_pick_each_cell_by_setting_and_model(omniglot, tmp_path, capsys):
    out, results = str(tmp_path / "out"), tmp_path / "tables"
    for model in ("conv", "fc"):
        assert main(["run", "--suite", "omniglot", "--learners", "maml", "--profile", "smoke", "--set",
                     f"model={model}", "--out", out, "--quiet"]) == 0
    assert main(["run", "--suite", "omniglot", "--learners", "context", "--setting", "5way-5shot", "--profile",
                 "smoke", "--out", out, "--quiet"]) == 0
    assert main(["report", "--out", out, "--results", str(results), "--tables", "table1,table3"]) == 0
    import pandas as pd
    table1 = pd.read_csv(results / "table1.csv")
    assert set(table1.suite) == {"omniglot", "miniimagenet"}  # Table 1's two parts
    table1 = table1[table1.suite == "omniglot"].set_index(["setting", "row", "column"])
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    config = {learner_model: run_id for run_id, learner_model in db.execute(
        "SELECT run_id, learner || '-' || json_extract(config, '$.model') FROM runs")}
    conv, fc = table1.loc[("5-way", "MAML", "1-shot")], table1.loc[("5-way", "MAML no conv", "1-shot")]
    assert conv.n == fc.n == 4 and conv.paper == 98.7 and fc.paper == 89.7
    scores = lambda run_id: [v for (v,) in db.execute(
        "SELECT value FROM scores WHERE run_id = ? AND step = 2 ORDER BY task", (run_id,))]
    assert conv["mean"] == pytest.approx(sum(scores(config["maml-conv"])) / 4)  # the last test step (smoke: 2)
    assert fc["mean"] == pytest.approx(sum(scores(config["maml-fc"])) / 4)
    assert table1.loc[("20-way", "MAML", "1-shot")].isna()["mean"]
    assert table1.loc[("5-way", "MAML", "5-shot")].isna()["mean"]
    table3 = pd.read_csv(results / "table3.csv").set_index(["row", "column"])
    assert table3.loc[("context vector", "5-shot")].n == 4 and table3.loc[("context vector", "1-shot")].isna()["mean"]
    md = (results / "table1.md").read_text()
    assert "Every cell: smoke profile on cpu." in md and "not at the paper's training budget" in md
    for model, cell in (("fc", fc), ("conv", conv)):  # the worst episodes of one run, picked by its config
        assert main(["tasks", "--suite", "omniglot", "--learner", "maml", "--shots", "1", "--step", "2",
                     "--where", f"model={model}", "--where", "ways=5", "--out", out]) == 0
        printed = capsys.readouterr().out
        mean = float(re.search(r"^mean: (\S+)$", printed, re.MULTILINE).group(1))
        assert mean == pytest.approx(cell["mean"]) and "over_10x_median" not in printed


def test_frozen_test_episodes_match_the_committed_manifest(omniglot):
    committed = json.loads(EPISODES.read_text())
    assert set(committed) == set(SETTINGS)
    for setting in SETTINGS:
        assert suite(setting, "paper").test_episodes_digest() == committed[setting], setting  # 600 episodes

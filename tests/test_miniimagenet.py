"""MiniImagenet: preparation (a small fake dataset everywhere, the real one via HARNESS_DATA as in CI), episodes, the
model's meta-gradient under vmap, the chunked evaluator, the frozen test episodes, and a smoke run of every applicable
learner in both settings."""
import hashlib
import io
import json
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.cli import main
from harness.evaluation import FewShotEvaluator, frozen_tasks
from harness.functional import meta_gradient, step_sizes, task_loss
from harness.models import FunctionalModel
from harness.plugins import registry
from harness.runner import RunSpec, prepare
from plugins.maml import MAML
from plugins.miniimagenet import EPISODES, MiniImagenet, channels_last, float_images
from plugins.miniimagenet_data import MiniImagenetData, load_split
from plugins.vision import pooled_conv_net

REG = registry()
LEARNERS = sorted(name for name, p in REG.learners.items() if p.obj.applies_to(MiniImagenet))
SETTINGS = list(MiniImagenet.settings)


def suite(setting="5way-1shot", profile="smoke", **overrides):
    return prepare(RunSpec("miniimagenet", "maml", profile, setting=setting,
                           overrides={k: str(v) for k, v in overrides.items()}), REG).suite


# preparation of a small fake MiniImagenet: 2 classes per split, 3 images per class

FAKE_SPLIT = {"train": ["n00000001", "n00000002"], "val": ["n00000003", "n00000004"],
              "test": ["n00000005", "n00000006"]}


@pytest.fixture
def fake(tmp_path, monkeypatch) -> Path:
    """A fake MiniImagenet in the standard layout under tmp_path/data/miniimagenet, with a MANIFEST.sha256; the
    expected counts cut down to its own."""
    monkeypatch.setattr("plugins.miniimagenet_data.load_split", lambda: FAKE_SPLIT)
    monkeypatch.setattr("plugins.miniimagenet_data.PER_CLASS", 3)
    folder = tmp_path / "data" / "miniimagenet"
    (folder / "images").mkdir(parents=True)
    noise = np.random.default_rng(0)
    for split, wnids in FAKE_SPLIT.items():
        names = [f"{wnid}{i:08d}.jpg" for wnid in wnids for i in (3, 1, 2)]
        (folder / f"{split}.csv").write_text("filename,label\n" + "".join(f"{n},{n[:9]}\n" for n in names))
        for name in names:
            Image.fromarray(noise.integers(0, 256, (84, 84, 3), dtype=np.uint8)).save(folder / "images" / name)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(folder)}"
             for p in sorted(folder.rglob("*.*"))]
    (folder / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")
    return folder


def test_a_fake_miniimagenet_is_decoded_in_split_class_and_file_order(fake, tmp_path):
    prepared = MiniImagenetData().prepare(tmp_path / "data", tmp_path / "cache")
    images = MiniImagenetData.load(prepared)
    assert {split: tuple(x.shape) for split, x in images.items()} == {s: (2, 3, 84, 84, 3) for s in FAKE_SPLIT}
    expected = np.asarray(Image.open(fake / "images" / "n0000000600000002.jpg"))
    assert np.array_equal(images["test"][1, 1].numpy(), expected)  # class 2 of test, its 2nd file by name
    assert json.loads((prepared / "index.json").read_text())["splits"] == FAKE_SPLIT
    assert MiniImagenetData().prepare(tmp_path / "elsewhere", tmp_path / "cache") == prepared  # reused, not rebuilt
    assert MiniImagenetData.source(tmp_path / "data") == MiniImagenetData.source(fake) == fake  # either layout


def corrupt(fake: Path, fault: str) -> None:
    """`fake` with one `fault` of those `FAULTS` names."""
    image = fake / "images" / "n0000000100000001.jpg"
    train = fake / "train.csv"
    if fault == "missing image":
        image.unlink()
    elif fault == "wrong sha256":
        data = bytearray(image.read_bytes())
        data[len(data) // 2] ^= 1  # one bit of the compressed pixels: still a readable JPEG
        image.write_bytes(bytes(data))
    elif fault == "unreadable image":
        image.write_bytes(b"not a jpeg")
        (fake / "MANIFEST.sha256").unlink()
    elif fault == "wrong size":
        out = io.BytesIO()
        Image.new("RGB", (80, 80)).save(out, format="JPEG")
        image.write_bytes(out.getvalue())
        (fake / "MANIFEST.sha256").unlink()
    elif fault == "too few images":
        train.write_text("".join(train.read_text().splitlines(keepends=True)[:-1]))
        (fake / "MANIFEST.sha256").unlink()
    elif fault == "other classes":
        train.write_text(train.read_text().replace("n00000002", "n00000009"))
        (fake / "MANIFEST.sha256").unlink()
    elif fault == "label not the file's":
        train.write_text(train.read_text().replace("00000001.jpg,n00000001", "00000001.jpg,n00000002"))
        (fake / "MANIFEST.sha256").unlink()
    elif fault == "no header":
        train.write_text(train.read_text().replace("filename,label\n", ""))
    elif fault == "no images folder":
        for path in (fake / "images").iterdir():
            path.unlink()
        (fake / "images").rmdir()


FAULTS = {"missing image": "1 of the 18 images the CSVs list are missing", "wrong sha256": "does not match its sha256",
          "unreadable image": "is not a readable image", "wrong size": "is 80x80, not 84x84",
          "too few images": "lists 2 distinct files of class n00000002, not 3",
          "other classes": "(n00000002 is missing)", "label not the file's": "is not <wnid><8 digits>.jpg,<wnid>",
          "no header": "header filename,label", "no images folder": "MiniImagenet not found: put images/"}


@pytest.mark.parametrize("fault", FAULTS)
def test_bad_data_is_one_line_exit_2_saying_what_to_put_where_and_leaves_no_cache(fake, tmp_path, capsys, fault):
    corrupt(fake, fault)
    cache = tmp_path / "cache"
    assert main(["data", "prepare", "miniimagenet", "--data-dir", str(tmp_path / "data"), "--cache", str(cache)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert FAULTS[fault] in err and err.startswith("error: ") and not cache.exists()


def test_missing_data_refuses_a_run_before_it_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "nothing"))
    assert main(["run", "--suite", "miniimagenet", "--learners", "maml", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MiniImagenet not found: put images/ (the 60,000 84x84 JPEGs)" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    assert main(["run", "--suite", "miniimagenet", "--learners", "oracle"]) == 2  # no task features to give it


# the model

def test_second_order_meta_gradient_of_the_model_under_vmap_equals_the_per_task_loop():
    """The batch-norm trap (DESIGN.md): on these data `nn.BatchNorm2d` under vmap misses the loop by 2% after one step
    and 110% after two (measured); the written-out batch norm must match it to rounding (1e-14 measured), in float64,
    on the paper's 84x84 inputs."""
    torch.manual_seed(0)
    model = pooled_conv_net(3, 5).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    labels = torch.arange(5).expand(2, -1)  # 2 tasks of 5-way 1-shot, 1 query image per class
    data = (torch.rand(2, 5, 3, 84, 84, dtype=torch.double), labels, torch.rand(2, 5, 3, 84, 84, dtype=torch.double),
            labels)
    loss_fn, lrs = task_loss(model, torch.nn.functional.cross_entropy), step_sizes(0.5, 2)
    (vmap_loss, vmapped), (loop_loss, looped) = (meta_gradient(loss_fn, lrs, vectorize=v)(params, *data)
                                                 for v in ("vmap", "loop"))
    first_order = meta_gradient(loss_fn, lrs, first_order=True, vectorize="loop")(params, *data)[1]
    relative = lambda a: max(((a[k] - looped[k]).norm() / looped[k].norm()).item() for k in looped)
    assert torch.allclose(vmap_loss, loop_loss, rtol=1e-12)
    assert relative(vmapped) < 1e-9
    assert relative(first_order) > 1e-3, "second-order terms must matter for this check to mean anything"


def test_channels_last_storage_gives_the_contiguous_meta_gradient():
    """The suite stores its net and images channels-last (faster on the CPU); in float64 the second-order
    meta-gradient must be the contiguous one to rounding (3e-14 measured)."""
    torch.manual_seed(0)
    mini = MiniImagenet.__new__(MiniImagenet)  # no data needed for the model
    mini.config, mini.ways = MiniImagenet.settings["5way-1shot"], 5
    last = mini.make_model().double()
    plain = pooled_conv_net(3, 5).double()
    plain.load_state_dict(last.state_dict())
    assert last[0].weight.is_contiguous(memory_format=torch.channels_last) and last[0].weight.stride()[1] == 1
    pixels = torch.randint(0, 256, (2, 10, 84, 84, 3), dtype=torch.uint8)
    images = float_images(pixels)
    assert images[0].is_contiguous(memory_format=torch.channels_last) and torch.equal(
        images, pixels.permute(0, 1, 4, 2, 3).float() / 255)
    images = images.double()
    assert torch.equal(channels_last(images.contiguous()), images) and channels_last(images).stride() == images.stride()
    labels = torch.arange(5).expand(2, -1)
    gradient = lambda net, x: meta_gradient(task_loss(net, torch.nn.functional.cross_entropy), step_sizes(0.5, 2),
                                            vectorize="loop")({k: v.detach() for k, v in net.named_parameters()},
                                                              x[:, :5], labels, x[:, 5:], labels)[1]
    ours, reference = gradient(last, images), gradient(plain, images.contiguous())
    assert max(((ours[k] - reference[k]).norm() / reference[k].norm()).item() for k in reference) < 1e-12


def test_models_take_extra_channels_and_a_pooled_head():
    mini = MiniImagenet.__new__(MiniImagenet)  # no data needed for the model
    mini.config, mini.ways = MiniImagenet.settings["5way-1shot"], 5
    net = mini.make_model(extra_inputs=2, outputs=64)
    assert net[0].in_channels == 5 and net[-1].in_features == 32 * 5 * 5 and net[-1].out_features == 64
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 0  # written out (vmap trap)
    x = mini.append_inputs(torch.zeros(7, 3, 84, 84), torch.ones(2, 84, 84))
    assert x.shape == (7, 5, 84, 84) and net(x).shape == (7, 64)
    assert mini.context_shape(4) == (4, 84, 84) and mini.pooled_classes == 64


# the real data

def test_real_miniimagenet_is_prepared_verified_and_cached(miniimagenet_cache, capsys):
    data = os.environ["HARNESS_DATA"]
    args = ["data", "prepare", "miniimagenet", "--data-dir", data, "--cache", str(miniimagenet_cache)]
    assert main(args) == 0  # a second prepare reuses the cache
    prepared = Path(capsys.readouterr().out.strip())
    assert prepared == miniimagenet_cache / "miniimagenet"
    images = MiniImagenetData.load(prepared)
    assert {s: tuple(x.shape) for s, x in images.items()} == {
        "train": (64, 600, 84, 84, 3), "val": (16, 600, 84, 84, 3), "test": (20, 600, 84, 84, 3)}
    assert json.loads((prepared / "index.json").read_text())["splits"] == load_split()
    assert (prepared / "images.npy").stat().st_size == 60_000 * 84 * 84 * 3 + 128
    source = MiniImagenetData.source(Path(data))
    rows = [line.split(",") for line in (source / "test.csv").read_text().splitlines()[1:]]
    wnid = load_split()["test"][7]
    first = min(name for name, label in rows if label == wnid)  # class 7 of test, its first file by name
    assert np.array_equal(images["test"][7, 0].numpy(), np.asarray(Image.open(source / "images" / first)))
    assert 80 < images["val"][:, ::50].float().mean() < 140  # photos, not blank


def test_episodes_are_n_way_k_shot_of_distinct_images_of_their_split(miniimagenet):
    mini = suite("5way-5shot")
    tasks = mini.sample("val", 2, torch.Generator().manual_seed(0), shots=5, query=15)
    assert tasks.support_x.shape == (2, 25, 3, 84, 84) and tasks.query_x.shape == (2, 75, 3, 84, 84)
    assert tasks.support_x.dtype == torch.float32 and 0 <= tasks.support_x.min() and tasks.support_x.max() <= 1
    assert tasks.support_x[0].is_contiguous(memory_format=torch.channels_last)  # as the net's weights
    assert torch.equal(tasks.support_y[0], torch.arange(5).repeat(5))  # shot by shot: 1-shot is a prefix
    images = mini.images("val")
    for t in range(2):
        x = torch.cat([tasks.support_x[t], tasks.query_x[t]])
        classes = torch.cat([tasks.support_classes[t], tasks.query_classes[t]])
        labels = torch.cat([tasks.support_y[t], tasks.query_y[t]])
        assert len(set(classes[:5].tolist())) == 5 and torch.equal(classes, classes[:5].repeat(20))
        for image, cls in zip(x, classes.tolist()):  # one of that class's images, in [0, 1]
            pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0)
            candidates = images[cls][(images[cls][:, 0] == pixels[0]).flatten(1).all(1)]  # by the first row, then all
            assert (candidates == pixels).flatten(1).all(1).any()
        for c in range(5):
            assert len(torch.unique(x[labels == c].flatten(1), dim=0)) == 20  # 5 + 15 distinct images
    assert mini.pooled_classes == 64 and suite().sample("train", 1, torch.Generator(), 1, 1).support_classes.max() < 64


def test_the_chunked_evaluator_scores_the_frozen_tasks_as_the_plain_one_does(miniimagenet):
    mini = suite(eval_tasks=3)
    chunked = replace(mini.evaluator(torch.device("cpu")), chunk=2)
    plain = FewShotEvaluator.from_config(mini.config, torch.device("cpu"))
    part = chunked.episodes(mini, 2, 3)
    assert torch.equal(part.query_x, frozen_tasks(mini, "test", 3, 1, mini.config["eval_query"]).query_x[2:])
    learner = MAML({**mini.config, "first_order": False})
    torch.manual_seed(0)
    state = FunctionalModel(mini, "cpu").state_dict()
    bar = lambda total, desc, initial=0: type("Bar", (), {"update": lambda self, n: None, "close": lambda self: None})()
    scores = lambda evaluator: sorted((s.task, s.shots, s.step, s.value) for s in
                                      evaluator.evaluate(mini, learner, state, bar))
    assert scores(chunked) == scores(plain) and len(scores(plain)) == 3 * 3


def test_frozen_test_episodes_match_the_committed_manifest(miniimagenet):
    committed = json.loads(EPISODES.read_text())
    assert set(committed) == set(SETTINGS)
    for setting in SETTINGS:
        assert suite(setting, "paper").test_episodes_digest() == committed[setting], setting  # 600 episodes


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("learner", LEARNERS)
def test_smoke_run_of_every_learner_and_setting(miniimagenet, tmp_path, monkeypatch, learner, setting):
    out = tmp_path / "out"
    assert main(["run", "--suite", "miniimagenet", "--setting", setting, "--learners", learner, "--profile", "smoke",
                 "--out", str(out), "--quiet"]) == 0
    config = {**MiniImagenet.settings[setting], **MiniImagenet.profiles["smoke"]}
    rows = sqlite3.connect(out / "results.sqlite").execute("SELECT shots, step, value FROM scores").fetchall()
    assert len(rows) == config["eval_tasks"] * (config["eval_steps"] + 1)
    assert {shots for shots, _, _ in rows} == {config["train_shots"]}
    assert all(0 <= value <= 100 for _, _, value in rows)
    if (learner, setting) == ("maml", SETTINGS[0]):  # the worst tasks of a suite without task features: no test
        monkeypatch.setattr(MiniImagenet, "evaluator", None)  # episodes are built (600 would take 4 GB)
        assert main(["tasks", "--suite", "miniimagenet", "--learner", "maml", "--shots", "1", "--step", "2",
                     "--out", str(out)]) == 0


def test_the_papers_learners_apply_and_the_committed_split_has_64_16_20_distinct_classes():
    assert {"maml", "fomaml", "pretrain", "scratch", "context"} <= set(LEARNERS) and "oracle" not in LEARNERS
    split = load_split()
    assert {name: len(wnids) for name, wnids in split.items()} == {"train": 64, "val": 16, "test": 20}
    assert len(set().union(*split.values())) == 100

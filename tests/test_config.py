"""Config keys: one declaration each (`harness.config.Key`), every default and `--set` value checked at plan time."""
import itertools
import shutil

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import JUNK, valid

from harness import config
from harness.config import CORE_KEYS, RUNTIME_DEFAULTS
from harness.errors import UsageError
from harness.keys import INT_MAX, TRUE_WORDS, Key
from harness.plugins import Provided, Registry, registry
from harness.protocols import Learner, SupervisedSuite
from harness.runner import RunSpec, configure

REG = registry()
SUITES = [REG.suite(name) for name in sorted(REG.suites)]
LEARNERS = [REG.learner(name) for name in sorted(REG.learners)]


def suite_layers(suite):
    return [*getattr(suite, "settings", {}).values(), *suite.profiles.values()]


def learner_layers(learner):
    return [learner.defaults, *getattr(learner, "profile_defaults", {}).values()]


PLUGINS = [(f"suite {s.name}", s, suite_layers(s)) for s in SUITES] + [
    (f"learner {lr.name}", lr, learner_layers(lr)) for lr in LEARNERS]


def refused(suite, learner, **overrides):
    """The UsageError `configure` raises for these `--set` values on the smoke profile."""
    with pytest.raises(UsageError) as error:
        configure(RunSpec(suite, learner, "smoke", overrides=overrides), REG)
    return str(error.value)


def configured(suite, learner, **overrides):
    return configure(RunSpec(suite, learner, "smoke", overrides=overrides), REG)[1]


# every installed plugin declares its keys, and its defaults fit them

def test_the_core_declares_every_runtime_key():
    assert set(RUNTIME_DEFAULTS) <= set(CORE_KEYS)
    for key, value in RUNTIME_DEFAULTS.items():
        CORE_KEYS[key].check(key, value)


@pytest.mark.parametrize("owner,plugin,layers", PLUGINS, ids=[p[0] for p in PLUGINS])
def test_every_key_a_plugin_sets_is_declared_and_its_values_fit(owner, plugin, layers):
    declared = {**CORE_KEYS, **getattr(plugin, "keys", {})}
    for layer in layers:
        assert set(layer) <= set(declared), f"{owner} sets undeclared keys {set(layer) - set(declared)}"
        for key, value in layer.items():
            declared[key].check(key, value)


@pytest.mark.parametrize("owner,plugin,layers", PLUGINS, ids=[p[0] for p in PLUGINS])
def test_a_plugin_declares_only_keys_it_sets(owner, plugin, layers):
    used = set().union(*layers)
    assert set(getattr(plugin, "keys", {})) <= used


def test_a_key_declared_by_two_plugins_that_meet_in_a_run_is_declared_alike():
    """The core and a plugin, or a suite and a learner, must agree on a key they both declare (two suites never meet
    in one run: each may bound e.g. `ways` by its own classes)."""
    owners = [("the core", CORE_KEYS)] + [(owner, p.keys) for owner, p, _ in PLUGINS]
    meet = lambda a, b: "the core" in (a, b) or a.split()[0] != b.split()[0]
    for (owner, keys), (other, others) in itertools.combinations(owners, 2):
        if meet(owner, other):
            for key in keys.keys() & others.keys():
                assert keys[key] == others[key], f"{key} declared differently by {owner} and {other}"
    assert len({key for _, keys in owners for key in keys}) >= 45


@pytest.mark.parametrize("suite,learner", list(itertools.product(SUITES, LEARNERS)),
                         ids=[f"{s.name}-{lr.name}" for s, lr in itertools.product(SUITES, LEARNERS)])
def test_declarations_cover_exactly_the_config_of_every_pair(suite, learner):
    keys = config.declarations(suite, learner)
    assert set(keys) == set().union(*config.layers(suite, learner))
    assert all(keys[k] == spec for k, spec in config.declared(suite, learner).items() if k in keys)


# the defects of the review, at plan time

def test_negative_eval_steps_is_refused():
    message = refused("sinusoid", "maml", eval_steps="-1")
    assert "eval_steps=-1 is out of range" in message and "int in [0, 2147483647]" in message
    assert configured("sinusoid", "maml", eval_steps="0")["eval_steps"] == 0


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("key", ["inner_lr", "meta_lr"])
def test_non_finite_float_is_refused(key, raw):
    assert f"{key}=" in refused("sinusoid", "maml", **{key: raw}) and "is not finite" in refused(
        "sinusoid", "maml", **{key: raw})


@pytest.mark.parametrize("raw,reason", [("5,5", "repeats an entry"), ("20,5", "is not in ascending order"),
                                        ("0,5", "is out of range"), ("", "is not a comma-separated list")])
def test_repeated_unsorted_or_empty_eval_shots_are_refused(raw, reason):
    assert reason in refused("sinusoid", "maml", eval_shots=raw)


@pytest.mark.parametrize("raw", ["99999999999999999999", str(2**63), str(2**63 - 1), str(INT_MAX + 1), "9" * 5000])
@pytest.mark.parametrize("key", ["meta_batch", "meta_iterations", "eval_tasks", "threads"])
def test_int_too_large_for_torch_is_refused(key, raw):
    message = refused("sinusoid", "maml", **{key: raw})
    assert message.startswith(f"{key}=") and "\n" not in message


@pytest.mark.parametrize("raw,value", [("true", True), ("Yes", True), ("ON", True), ("1", True), ("false", False),
                                       ("no", False), ("off", False), ("0", False)])
def test_bool_words(raw, value):
    assert configured("sinusoid", "maml", first_order=raw)["first_order"] is value


@pytest.mark.parametrize("raw", ["maybe", "2", "", "none", "truth"])
def test_a_bool_takes_only_bool_words(raw):
    assert "first_order takes bool" in refused("sinusoid", "maml", first_order=raw)


def test_none_only_where_optional():
    assert configured("navigation2d", "maml", finish_begun="none")["finish_begun"] is None
    assert configured("navigation2d", "maml", finish_begun="true")["finish_begun"] is True
    assert "keep_best takes bool (true or false);" in refused("navigation2d", "maml", keep_best="none")


def test_message_is_one_line_naming_key_value_allowed_and_fix():
    message = refused("sinusoid", "maml", inner_lr="-0.5")
    assert message == ("inner_lr=-0.5 is out of range: inner_lr takes finite float > 0; "
                       "set it with --set inner_lr=VALUE")
    assert "\n" not in refused("sinusoid", "maml", inner_lr="1\n2")


def test_values_that_fit_read_as_before():
    cfg = configured("sinusoid", "maml", eval_shots="1, 5,10", inner_lr="0.5", meta_batch="007", vectorize="loop")
    assert (cfg["eval_shots"], cfg["inner_lr"], cfg["meta_batch"], cfg["vectorize"]) == ([1, 5, 10], 0.5, 7, "loop")


# third-party plugins

class FakeSuite(SupervisedSuite):
    name = "fake"
    kind = "supervised"
    problem = "regression"
    profiles = {"smoke": {"meta_iterations": 2, "inner_lr": 0.1, "width": 3}}
    keys = {"width": Key(int, "hidden units", low=1, high=64)}


class FakeLearner(Learner):
    name = "plain"
    defaults = {"plain_lr": 0.02, "option": None, "names": ("a", "b")}

    @classmethod
    def applies_to(cls, suite):
        return True


def fake_registry(suite=FakeSuite, learner=FakeLearner):
    return Registry(suites={"fake": Provided("fake", suite, "fake-dist")},
                    learners={"plain": Provided("plain", learner, "fake-dist")})


def fake_configure(suite=FakeSuite, learner=FakeLearner, **overrides):
    return configure(RunSpec("fake", "plain", "smoke", overrides=overrides), fake_registry(suite, learner))[1]


def test_a_plugins_own_declaration_is_checked():
    assert fake_configure(width="64")["width"] == 64
    with pytest.raises(UsageError, match=r"width=65 is out of range: width takes int in \[1, 64\]"):
        fake_configure(width="65")


def test_an_undeclared_key_is_checked_by_the_type_of_its_default():
    assert fake_configure(plain_lr="0.05")["plain_lr"] == 0.05
    with pytest.raises(UsageError, match="plain_lr=nan is not finite: plain_lr takes finite float;"):
        fake_configure(plain_lr="nan")
    for key in ("option", "names"):
        with pytest.raises(UsageError, match=f"--set {key}: no plugin declares what {key} takes"):
            fake_configure(**{key: "1"})
    assert fake_configure()["option"] is None and fake_configure()["names"] == ("a", "b")


def test_a_plugin_may_redeclare_a_core_key_alike_with_its_own_words():
    class Alike(FakeSuite):
        keys = {**FakeSuite.keys, "inner_lr": Key(float, "alpha", above=0)}

    assert fake_configure(Alike, inner_lr="0.2")["inner_lr"] == 0.2


def test_two_declarations_of_one_key_that_differ_are_a_one_line_error():
    class Narrower(FakeLearner):
        keys = {"inner_lr": Key(float, above=0, high=1)}

    with pytest.raises(UsageError) as error:
        fake_configure(learner=Narrower)
    assert str(error.value) == ("config key inner_lr is declared as finite float > 0 by the core but as finite float "
                                "in (0, 1] by learner plain: a plugin bug; report it to the plugin's authors")


def test_a_declaration_has_one_of_the_known_types():
    with pytest.raises(TypeError, match="Key type must be one of"):
        Key(dict)


@pytest.mark.parametrize("spec,words", [
    (Key(int, low=0), "int in [0, 2147483647]"), (Key(float, above=0, below=1), "finite float in (0, 1)"),
    (Key(float, low=0), "finite float >= 0"), (Key(float, high=2), "finite float <= 2"), (Key(float), "finite float"),
    (Key(str, choices=("a", "b"), optional=True), "one of a, b or none"), (Key(str), "text"),
    (Key(list, low=1, distinct=True), "comma-separated list of distinct ints in [1, 2147483647]"),
])
def test_what_a_key_takes_in_words(spec, words):
    assert spec.allowed() == words


# property: any `--set` value of any declared key gives a config or a one-line UsageError

PAIRS = [("sinusoid", "maml"), ("sinusoid", "multitask-mean"), ("sinusoid", "context"), ("omniglot", "pretrain"),
         ("navigation2d", "fomaml"), ("ant-velocity", "oracle")]
COMPILER = any(shutil.which(cc) for cc in ("cc", "gcc", "clang"))


@st.composite
def assignments(draw, values):
    """(suite, learner, profile, key, raw) for a declared key of one of `PAIRS`."""
    suite, learner = draw(st.sampled_from(PAIRS))
    keys = config.declarations(REG.suite(suite), REG.learner(learner))
    key = draw(st.sampled_from(sorted(keys)))
    return suite, learner, draw(st.sampled_from(sorted(REG.suite(suite).profiles))), key, draw(values(keys[key]))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assignments(valid))
def test_every_value_a_declaration_allows_configures(case):
    suite, learner, profile, key, raw = case
    assume(COMPILER or not (key == "compile" and raw.lower() in TRUE_WORDS))
    spec, cfg = configure(RunSpec(suite, learner, profile, overrides={key: raw}), REG)
    assert cfg[key] == config.declarations(REG.suite(suite), REG.learner(learner))[key].parse(key, raw)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assignments(lambda spec: st.one_of(valid(spec), JUNK)))
def test_any_value_gives_a_config_or_a_one_line_usage_error(case):
    suite, learner, profile, key, raw = case
    try:
        spec, cfg = configure(RunSpec(suite, learner, profile, overrides={key: raw}), REG)
    except UsageError as error:
        message = str(error)
        assert "\n" not in message and (message.startswith(f"{key}=") or "C compiler" in message), message
        assert f"--set {key}=VALUE" in message or "C compiler" in message
    else:
        config.validate(cfg, config.declarations(REG.suite(suite), REG.learner(learner)))

"""Property-based tests (hypothesis): class-count profiles, per-class splits, config parsing."""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from major2minor.config import Config, ConfigError, all_keys, load_config, parse_override, set_key
from major2minor.data.profiles import class_counts, hold_out_per_class, longtail_counts, select_per_class

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------
# class-count profiles

n_max_st = st.integers(1, 10_000)
classes_st = st.integers(2, 200)
ratio_st = st.floats(1.0, 1000.0, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(n_max=n_max_st, c=classes_st, ratio=ratio_st)
def test_longtail_is_monotone_from_n_max_to_n_max_over_ratio(n_max, c, ratio):
    counts = longtail_counts(n_max, c, ratio)
    assert len(counts) == c
    assert counts[0] == n_max
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    # last = int(n_max * mu^(C-1)) with mu^(C-1) = 1/ratio up to floating-point rounding: the
    # truncation of n_max / ratio (or of a value a hair away from it)
    x = n_max / ratio
    assert math.floor(x * (1 - 1e-9)) <= counts[-1] <= math.floor(x * (1 + 1e-9))
    if min(counts) >= 1:
        assert class_counts("longtail", n_max, c, ratio) == counts
    else:
        with pytest.raises(ValueError, match="lower data.ratio"):
            class_counts("longtail", n_max, c, ratio)


@SETTINGS
@given(n_max=n_max_st, c=classes_st, ratio=ratio_st, fraction=st.floats(0.0, 1.0))
def test_step_has_two_levels(n_max, c, ratio, fraction):
    minor = int(n_max * (1.0 / ratio))
    assume(minor >= 1)
    counts = class_counts("step", n_max, c, ratio, fraction)
    n_minor = int(round(c * fraction))
    assert len(counts) == c
    assert counts == [n_max] * (c - n_minor) + [minor] * n_minor
    assert set(counts) <= {n_max, minor}
    assert all(a >= b for a, b in zip(counts, counts[1:]))


@SETTINGS
@given(ratio=st.floats(-100.0, 0.999))
def test_ratio_below_one_always_raises(ratio):
    with pytest.raises(ValueError, match=r"data\.ratio=.* must be >= 1"):
        class_counts("longtail", 100, 10, ratio)


# ------------------------------------------------------------------------------------------------
# per-class selection and hold-outs


@st.composite
def labels_and_counts(draw):
    c = draw(st.integers(1, 8))
    labels = np.asarray(draw(st.lists(st.integers(0, c - 1), min_size=c, max_size=300)), dtype=np.int64)
    available = np.bincount(labels, minlength=c)
    counts = [draw(st.integers(0, int(a))) for a in available]
    return labels, counts


@SETTINGS
@given(data=labels_and_counts(), selection=st.sampled_from(["first", "random"]), seed=st.integers(0, 2**31))
def test_select_per_class_is_exact_disjoint_sorted(data, selection, seed):
    labels, counts = data
    idx = select_per_class(labels, counts, selection, seed)
    assert len(np.unique(idx)) == len(idx)  # disjoint: no index twice
    assert np.all(np.diff(idx) > 0)  # sorted (file order)
    assert np.bincount(labels[idx], minlength=len(counts)).tolist() == list(counts)
    if selection == "first":  # the first n_c of each class
        for c, n in enumerate(counts):
            assert np.array_equal(idx[labels[idx] == c], np.flatnonzero(labels == c)[:n])
    assert np.array_equal(idx, select_per_class(labels, counts, selection, seed))  # seeded


@SETTINGS
@given(data=labels_and_counts())
def test_select_per_class_refuses_more_than_available(data):
    labels, counts = data
    c = int(np.argmax(counts))
    counts = list(counts)
    counts[c] = int(np.sum(labels == c)) + 1
    with pytest.raises(ValueError, match=rf"class {c} has .* samples but the profile asks for"):
        select_per_class(labels, counts)


@SETTINGS
@given(data=labels_and_counts())
def test_hold_out_per_class_partitions_exactly(data):
    labels, per_class = data
    held, rest = hold_out_per_class(labels, per_class)
    assert len(np.intersect1d(held, rest)) == 0  # disjoint
    assert np.array_equal(np.sort(np.concatenate([held, rest])), np.arange(len(labels)))  # complete
    assert np.all(np.diff(held) > 0) and np.all(np.diff(rest) > 0)  # sorted
    num_classes = int(labels.max()) + 1
    assert np.bincount(labels[held], minlength=num_classes).tolist() == list(per_class[:num_classes])
    for c in range(num_classes):  # the first ones in file order
        assert np.array_equal(held[labels[held] == c], np.flatnonzero(labels == c)[: per_class[c]])


# ------------------------------------------------------------------------------------------------
# config parsing


def _typed_keys(*kinds):
    import dataclasses
    import typing

    out = []

    def walk(node, prefix):
        hints = typing.get_type_hints(type(node))
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, prefix + f.name + ".")
            elif hints[f.name] in kinds:
                out.append(prefix + f.name)

    walk(Config(), "")
    return out


FLOAT_KEYS = _typed_keys(float)
INT_KEYS = _typed_keys(int)
STR_KEYS = [k for k in _typed_keys(str, typing.Optional[str]) if k not in ("method", "recipe")]


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


@SETTINGS
@given(key=st.sampled_from(FLOAT_KEYS), value=st.floats(allow_nan=False, allow_infinity=False))
def test_any_float_round_trips_through_an_override(key, value):
    cfg = Config()
    set_key(cfg, *parse_override(f"{key}={value!r}"))
    assert _get(cfg, key) == value and isinstance(_get(cfg, key), float)


@SETTINGS
@given(key=st.sampled_from(INT_KEYS), value=st.integers(-(2**70), 2**70))
def test_any_int_round_trips_through_an_override(key, value):
    cfg = Config()
    set_key(cfg, *parse_override(f"{key}={value}"))
    assert _get(cfg, key) == value and type(_get(cfg, key)) is int


@SETTINGS
@given(
    key=st.sampled_from(STR_KEYS),
    value=st.text(
        st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="[{'\","), min_size=1, max_size=20
    ),
)
def test_any_plain_string_round_trips_through_an_override(key, value):
    assume(value.lower() not in ("none", "null", "~"))
    cfg = Config()
    set_key(cfg, *parse_override(f"{key}={value}"))
    assert _get(cfg, key) == value  # '2024.10' stays '2024.10', 'on' stays 'on'


@SETTINGS
@given(lr=st.floats(1e-8, 10.0), epochs=st.integers(2, 10_000), seed=st.integers(0, 2**63 - 1))
def test_valid_overrides_survive_validation(lr, epochs, seed):
    cfg = load_config(
        None, [f"optim.lr={lr!r}", f"train.epochs={epochs}", f"train.seed={seed}", f"train.deferred_epoch={epochs - 1}"]
    )
    assert (cfg.optim.lr, cfg.train.epochs, cfg.train.seed) == (lr, epochs, seed)


KNOWN = set(all_keys())


@SETTINGS
@given(
    key=st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz_."), min_size=1, max_size=24),
    value=st.sampled_from(["1", "0.5", "true", "x", "[1, 2]"]),
)
def test_unknown_keys_always_raise_config_error(key, value):
    assume(key.strip().lstrip("-") not in KNOWN)
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(None, [f"{key}={value}"])


@SETTINGS
@given(key=st.sampled_from(sorted(KNOWN)), suffix=st.text(st.sampled_from("xyz_"), min_size=1, max_size=4))
def test_misspelt_keys_raise_and_suggest(key, suffix):
    assume(key + suffix not in KNOWN)
    with pytest.raises(ConfigError, match=r"unknown config key .*Valid keys here"):
        load_config(None, [f"{key}{suffix}=1"])

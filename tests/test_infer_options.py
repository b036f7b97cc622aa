"""inference.options.ConversionOptions: defaults, validation messages, coercion, argparse flags."""

from __future__ import annotations

import argparse
import math

import pytest

from inference.options import ConversionOptions, OptionError, add_arguments, from_namespace

SPECS = ConversionOptions.fields_meta()

# 4.1's inference_main.py defaults (and its slice_inference keyword defaults)
DEFAULTS_41 = dict(transpose=0, slice_db=-40, cluster_infer_ratio=0, auto_predict_f0=False, noice_scale=0.4,
                   pad_seconds=0.5, clip_seconds=0, lg_num=0, lgr_num=0.75, f0_predictor="pm",
                   enhancer_adaptive_key=0, cr_threshold=0.05, k_step=100, use_spk_mix=False, second_encoding=False,
                   loudness_envelope_adjustment=1, f0_filter=False, seed=52468)


def test_defaults_are_41s():
    opts = ConversionOptions()
    for name, value in DEFAULTS_41.items():
        assert getattr(opts, name) == value, name
    assert opts.max_chunk_seconds == 60.0


def test_every_field_has_complete_metadata():
    for name, spec in SPECS.items():
        assert spec.help and spec.label and spec.kind in ("float", "int", "bool", "choice"), name
        assert spec.flags and all(f.startswith("-") for f in spec.flags), name
        if spec.kind in ("float", "int"):
            assert spec.minimum is not None, f"{name} has no lower bound"


def _out_of_range(spec):
    """Values just outside each bound of a numeric option."""
    step = 1 if spec.kind == "int" else 0.5
    vals = []
    if spec.minimum is not None:
        vals.append(spec.minimum - step)
    if spec.maximum is not None:
        vals.append(spec.maximum + step)
    return vals


NUMERIC_CASES = [(name, v) for name, spec in SPECS.items() if spec.kind in ("float", "int")
                 for v in _out_of_range(spec)]


@pytest.mark.parametrize("name,value", NUMERIC_CASES, ids=[f"{n}={v}" for n, v in NUMERIC_CASES])
def test_out_of_range_value_names_field_flag_value_and_range(name, value):
    spec = SPECS[name]
    with pytest.raises(OptionError) as e:
        ConversionOptions(**{name: value})
    msg = str(e.value)
    assert name in msg and spec.flags[-1] in msg and repr(value) in msg and spec.range_text() in msg, msg


def test_every_numeric_field_is_covered_by_a_range_case():
    assert {n for n, _ in NUMERIC_CASES} == {n for n, s in SPECS.items() if s.kind in ("float", "int")}


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.kind in ("float", "int")])
def test_non_numbers_and_nan_are_rejected(name):
    # None is valid only for optional fields (f0_min / f0_max: "4.1's range")
    for bad in ("3", True, math.nan, math.inf) + (() if SPECS[name].optional else (None,)):
        with pytest.raises(OptionError, match=name):
            ConversionOptions(**{name: bad})


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.kind == "bool"])
def test_bools_must_be_bools(name):
    with pytest.raises(OptionError, match=f"{name}.*true or false"):
        ConversionOptions(**{name: "yes"})


def test_f0_predictor_checked_against_the_registry():
    from modules.F0Predictor import list_f0_predictors

    assert ConversionOptions.choices("f0_predictor") == list_f0_predictors(hybrids=True)
    for name in list_f0_predictors():
        assert ConversionOptions(f0_predictor=name).f0_predictor == name
    with pytest.raises(OptionError, match=r"f0_predictor \(-f0p/--f0_predictor\) must be one of .*rmvpe.*'yin'"):
        ConversionOptions(f0_predictor="yin")


def test_crossfade_longer_than_clip_is_rejected():
    assert ConversionOptions(clip_seconds=1, lg_num=1).lg_num == 1
    with pytest.raises(OptionError, match=r"lg_num .* clip_seconds = 1\b.*got 1.5"):
        ConversionOptions(clip_seconds=1, lg_num=1.5)
    assert ConversionOptions(clip_seconds=0, lg_num=3).lg_num == 3  # ignored without clipping (4.1)


def test_whole_numbers_and_numpy_scalars():
    np = pytest.importorskip("numpy")
    opts = ConversionOptions(k_step=np.int64(20), noice_scale=np.float32(0.25), seed=7.0)
    assert type(opts.k_step) is int and type(opts.noice_scale) is float and type(opts.seed) is int
    with pytest.raises(OptionError, match="k_step .* whole number"):
        ConversionOptions(k_step=2.5)


def test_from_mapping_coerces_and_names_the_source():
    opts = ConversionOptions.from_mapping({"tran": "-3", "k_step": "37.0", "auto_predict_f0": "true",
                                           "cluster_infer_ratio": 0.5, "seed": 1.0}, source="form")
    assert (opts.transpose, opts.k_step, opts.auto_predict_f0, opts.cluster_infer_ratio, opts.seed) == \
        (-3, 37, True, 0.5, 1)
    with pytest.raises(OptionError, match="form: pad_seconds .* must be a number.*'lots'"):
        ConversionOptions.from_mapping({"pad_seconds": "lots"}, source="form")
    with pytest.raises(OptionError, match="form: noice_scale .* is empty"):
        ConversionOptions.from_mapping({"noice_scale": None}, source="form")
    with pytest.raises(OptionError, match="settings.json: unknown conversion option 'volume'"):
        ConversionOptions.from_mapping({"volume": 1}, source="settings.json")
    assert ConversionOptions.from_mapping({"volume": 1}, ignore_unknown=True) == ConversionOptions()
    base = ConversionOptions(noice_scale=0.1)
    assert ConversionOptions.from_mapping({"k_step": 5}, base=base).noice_scale == 0.1


def test_replace_validates_and_rejects_unknown_names():
    opts = ConversionOptions()
    assert opts.replace(transpose=5).transpose == 5 and opts.transpose == 0
    with pytest.raises(OptionError, match="unknown conversion option"):
        opts.replace(tempo=2)
    with pytest.raises(OptionError, match="lgr_num"):
        opts.replace(lgr_num=1.5)
    with pytest.raises(Exception):
        opts.transpose = 3  # frozen


def test_argparse_flags_from_fields():
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args([])
    assert from_namespace(args) == ConversionOptions()
    args = p.parse_args(["-t", "2", "5", "-cl", "1", "-lg", "0.5", "-a", "-f0p", "dio", "--seed", "3"])
    assert args.transpose == [2, 5]
    opts = from_namespace(args)
    assert (opts.transpose, opts.clip_seconds, opts.lg_num, opts.auto_predict_f0, opts.f0_predictor, opts.seed) == \
        (2, 1.0, 0.5, True, "dio", 3)
    assert from_namespace(args, transpose=5).transpose == 5
    with pytest.raises(OptionError, match="lgr_num"):
        from_namespace(p.parse_args(["-lgr", "2"]))

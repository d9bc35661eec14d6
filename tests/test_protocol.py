"""The missing-modality protocol: proportions, determinism, generalisation to M modalities."""

import re

import numpy as np
import pytest

from mamol_core.data.protocol import assign_presence, describe_protocol, missing_patterns, pattern_name, untrained_note
from mamol_core.errors import MamolError

NAMES = ["hsi", "lidar"]


@pytest.mark.parametrize("rate", [0.5, 0.7, 0.9])
def test_both_splits_missing_share_evenly(rate):
    presence = assign_presence(1000, NAMES, rate, "both", seed=0)
    assert not (~presence).all(axis=1).any(), "no sample may miss everything"
    assert abs((~presence[:, 0]).sum() - 500 * rate) <= 1
    assert abs((~presence[:, 1]).sum() - 500 * rate) <= 1
    assert presence.all(axis=1).sum() == 1000 - round(1000 * rate)


def test_single_modality_condition():
    presence = assign_presence(819, NAMES, 0.7, "lidar", seed=0)
    assert presence[:, 0].all()
    assert (~presence[:, 1]).sum() == round(0.7 * 819)


def test_deterministic_by_seed_and_different_across_seeds():
    a = assign_presence(500, NAMES, 0.7, "both", seed=4)
    assert np.array_equal(a, assign_presence(500, NAMES, 0.7, "both", seed=4))
    assert not np.array_equal(a, assign_presence(500, NAMES, 0.7, "both", seed=5))


def test_three_modalities_match_table_3_availability():
    presence = assign_presence(1200, ["hsi", "sar", "lidar"], 0.75, "both", seed=0)
    assert np.allclose(presence.mean(axis=0), 0.75, atol=0.002)
    assert (presence.sum(axis=1) >= 2).all()
    subsets = missing_patterns(["hsi", "sar", "lidar"], "subsets")
    assert len(subsets) == 6 and all(0 < p.sum() < 3 for p in subsets)


def test_weighted_single_absences_match_table_3_rows():
    names = ["hsi", "sar", "dsm"]
    presence = assign_presence(1200, names, 0.75, "sar:1+dsm:2", seed=0)
    assert np.allclose(presence.mean(axis=0), [1.0, 0.75, 0.5], atol=0.002)
    assert (presence.sum(axis=1) >= 2).all()


def test_bad_conditions_are_one_line_errors():
    with pytest.raises(MamolError, match="'sar' is not one of the modalities; use both, subsets, or names among"):
        assign_presence(10, NAMES, 0.5, "sar", 0)
    with pytest.raises(MamolError, match="between 0 and 1"):
        assign_presence(10, NAMES, 70, "both", 0)
    with pytest.raises(MamolError, match="every modality"):
        assign_presence(10, NAMES, 0.5, "hsi,lidar", 0)
    for weights in ("lidar:x", "lidar:nan+hsi:1", "lidar:inf+hsi:1", "lidar:0+hsi:1"):  # a weight is a positive number
        with pytest.raises(MamolError, match="NAME:WEIGHT"):
            assign_presence(10, NAMES, 0.5, weights, 0)
    assert pattern_name(np.array([True, False]), NAMES) == "missing lidar"


def test_one_modality_or_rate_zero_keeps_every_sample_complete_and_says_so():
    assert assign_presence(50, ["dsm"], 0.7, "both", 0).all()
    assert assign_presence(50, ["dsm"], 0.7, "dsm", 0).all()
    assert assign_presence(50, ["a", "b"], 0.0, "both", 0).all()
    assert describe_protocol(["dsm"], 0.7, "both").startswith("one modality (dsm): every sample is complete")
    assert describe_protocol(["a", "b"], 0.7, "both") == "70% of the samples miss a modality (35% lack a; 35% lack b), 30% have all of a, b"
    assert describe_protocol(["a", "b", "c"], 0.5, "c") == "50% of the samples miss a modality (50% lack c), 50% have all of a, b, c"


def test_a_protocol_that_leaves_sensor_combinations_untrained_says_so():
    three = ["hsi", "lidar", "sar"]
    assert untrained_note(three, 0.5, "both") == (
        "with 3 sensors, --missing both at rate 0.5 trains for 4 of their 7 combinations: maps from the other 3 (sar alone, say) use "
        "combinations the model never saw; set --missing to subsets to train for every combination")
    assert "trains for 2 of their 7" in untrained_note(three, 0.7, "sar")
    assert "trains for 3 of their 7" in untrained_note(three, 0.7, "sar:1+lidar:2")  # Table 3's uneven rows
    assert untrained_note(NAMES, 0.5, "lidar") == (
        "with 2 sensors, --missing lidar at rate 0.5 trains for 2 of their 3 combinations: maps from lidar alone use a combination the "
        "model never saw; set --missing to subsets to train for every combination")
    assert untrained_note(three, 1.0, "subsets").endswith("maps from all of them use a combination the model never saw; set "
                                                          "--missing-rate below 1 to train for every combination")
    assert untrained_note(three, 0.5, "subsets") is None and untrained_note(three, 0.0, "both") is None
    assert untrained_note(NAMES, 0.5, "both") is None and untrained_note(["hsi"], 0.5, "both") is None


def test_a_missing_sensor_name_that_is_no_sensor_is_refused_even_with_one_sensor():
    from mamol_core.data.protocol import check_missing_names

    for missing in ("both", "subsets", "lidar", "hsi,lidar", "lidar:2+hsi:1"):
        check_missing_names(NAMES, missing)
    check_missing_names(["lidar"], "both")  # the default, whatever the sensors
    for names, missing, unknown in ((["lidar"], "foo", "'foo'"), (NAMES, "lidar:1+sar:1", "'sar'"), (NAMES, "hsi,sar", "'sar'")):
        with pytest.raises(MamolError, match=re.escape(f"--missing {missing!r}: {unknown} is not one of the modalities")):
            check_missing_names(names, missing)


"""Dense tile prediction: edge coverage, blending, per-tile presence masks."""

import numpy as np
import pytest
import torch

from conftest import tiny_config
from mamol_core.errors import MamolError
from mamol_core.mapping.dense import DensePredictor, tent_window, tile_starts
from mamol_core.model import build_model


@pytest.mark.parametrize("length, size, stride, phase", [(20, 5, 3, 0), (5, 5, 2, 0), (23, 7, 4, 0), (100, 9, 9, 0), (8, 7, 7, 0),
                                                  (20, 5, 3, 2), (23, 7, 4, 1), (100, 9, 9, 8), (8, 7, 7, 3)])
def test_tiles_reach_the_last_row_and_column(length, size, stride, phase):
    starts = tile_starts(length, size, stride, phase)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all() and starts[0] == 0 and starts[-1] == length - size
    assert np.all(np.diff(starts) <= stride) and np.all(np.diff(starts) > 0)
    assert set(range(phase, length - size + 1, stride)) <= set(starts.tolist())  # every tile of the lattice


def test_tent_window_is_positive_and_peaks_in_the_centre():
    window = tent_window(7)
    assert window.min() > 0 and window[3, 3] == 1 and window[0, 0] == window.min()


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = build_model(tiny_config())
    for p in m.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.3)
    return m.eval()


def test_single_tile_equals_the_model_output(model):
    data = torch.randn(5, 6, 6)
    valid = torch.ones(2, 6, 6, dtype=torch.bool)
    result = DensePredictor(model, stride=6, batch_size=8, amp_dtype=None).predict(data, valid)
    expected = torch.softmax(model(data[None], torch.tensor([[True, True]])), 1)[0]
    torch.testing.assert_close(result.probabilities, expected)
    assert result.predicted.all()


def test_overlapping_tiles_blend_to_a_distribution_and_cover_everything(model):
    data = torch.randn(5, 13, 17)
    valid = torch.ones(2, 13, 17, dtype=torch.bool)
    tiles = []
    result = DensePredictor(model, stride=2, batch_size=7, amp_dtype=None).predict(data, valid, on_tiles=tiles.append)
    assert sum(tiles) == len(tile_starts(13, 6, 2)) * len(tile_starts(17, 6, 2))
    torch.testing.assert_close(result.probabilities.sum(0), torch.ones(13, 17))
    assert result.predicted.all()


def test_presence_follows_valid_share_per_tile(model):
    data = torch.randn(5, 6, 12)
    valid = torch.ones(2, 6, 12, dtype=torch.bool)
    valid[1, :, 6:] = False
    valid[1, 0, 6] = True
    result = DensePredictor(model, stride=6, batch_size=8, amp_dtype=None).predict(data, valid)
    left = torch.softmax(model(data[None, :, :, :6], torch.tensor([[True, True]])), 1)[0]
    right = torch.softmax(model(data[None, :, :, 6:], torch.tensor([[True, False]])), 1)[0]
    torch.testing.assert_close(result.probabilities[:, :, :6], left)
    torch.testing.assert_close(result.probabilities[:, :, 6:], right)
    assert result.used[1, :, :6].all() and not result.used[1, :, 6:].any()


def test_pixels_without_any_modality_get_no_prediction(model):
    data = torch.randn(5, 6, 12)
    valid = torch.ones(2, 6, 12, dtype=torch.bool)
    valid[:, :, 6:] = False
    result = DensePredictor(model, stride=6, batch_size=8, amp_dtype=None).predict(data, valid)
    assert result.predicted[:, :6].all() and not result.predicted[:, 6:].any()


def test_forced_pattern_overrides_presence(model):
    data = torch.randn(5, 6, 6)
    valid = torch.ones(2, 6, 6, dtype=torch.bool)
    result = DensePredictor(model, stride=6, batch_size=8, amp_dtype=None).predict(data, valid, force=torch.tensor([False, True]))
    expected = torch.softmax(model(data[None], torch.tensor([[False, True]])), 1)[0]
    torch.testing.assert_close(result.probabilities, expected)
    assert not result.used[0].any()


def test_dense_scoring_leaves_out_test_pixels_no_tile_of_their_sensors_reaches(model, caplog):
    """Sensor b covers a strip 2 px wide, a third of any 6-px tile: a test pixel scored with b alone gets no
    tile (a map leaves it empty); it was scored as a prediction of the first class."""
    from mamol_core.data.pixels import PixelSet
    from mamol_core.evaluation.predict import NO_PREDICTION, evaluate_predictions, predict_pixels_dense

    data = torch.randn(5, 12, 12)
    valid = torch.zeros(2, 12, 12, dtype=torch.bool)
    valid[0, :, :8] = True
    valid[1, :, 9:11] = True
    pixels = PixelSet(np.array([3, 5]), np.array([2, 10]), np.array([1, 0]), np.array([[True, False], [False, True]]))
    predicted = predict_pixels_dense(model, data, valid, pixels, 3, 8, None, "none")
    assert predicted[0] != NO_PREDICTION and predicted[1] == NO_PREDICTION
    assert "1 of the 2 test pixels lie where no tile holds enough valid data" in caplog.text
    scores = evaluate_predictions(pixels, predicted, [f"class {i + 1}" for i in range(4)], ["a", "b"]).summaries
    assert scores["overall"]["samples"] == 1 and set(scores) == {"overall", "missing b"}
    with pytest.raises(MamolError, match="none of the 1 test pixels lies where a tile holds enough valid data"):
        predict_pixels_dense(model, data, valid, PixelSet(pixels.rows[1:], pixels.cols[1:], pixels.targets[1:], pixels.presence[1:]),
                             3, 8, None, "none")

"""Which query feature cells see texture (methods/common/texture.py): a cell whose
surroundings are flat must not be matched, whatever its descriptor says."""

import numpy as np
import pytest
from torch import nn

from neural_reloc.methods.common.texture import gradient_magnitude, textured_cells, trunk_receptive_field


def test_a_flat_image_has_no_textured_cell_and_zero_gradient_keeps_all():
    flat = np.full((48, 64, 3), 127, np.uint8)
    assert gradient_magnitude(flat[..., 0]).max() == 0
    assert not textured_cells(flat, 4, 64, 4.0).any()
    assert textured_cells(flat, 4, 64, 0.0).all() and textured_cells(flat, 4, 64, 0.0).shape == (12, 16)


def test_cells_within_the_radius_of_an_edge_see_it_and_farther_ones_do_not():
    img = np.full((64, 128, 3), 100, np.uint8)
    img[:, 60:] = 160  # one vertical edge between columns 59 and 60 (cells 14 and 15)
    cells = textured_cells(img, 4, 8, 4.0)
    cols = np.nonzero(cells.all(axis=0))[0]
    assert not cells[:, ~np.isin(np.arange(cells.shape[1]), cols)].any()  # whole columns, nothing else
    # Sobel reaches one pixel each side: pixels 59 and 60 are textured (cells 14 and 15),
    # then 8 px = 2 cells each side.
    assert cols.tolist() == list(range(12, 18))
    assert textured_cells(img, 4, 0, 4.0).all(axis=0).nonzero()[0].tolist() == [14, 15]
    assert not textured_cells(img, 4, 8, 40.0).any()  # a 60-level step is ~30 levels/px: below 40


@pytest.mark.parametrize("dilations, expected", [((1,) * 7, 40), ((1, 1, 1, 1, 2, 4, 8), 128)])
def test_receptive_field_of_a_trunk_matches_the_crossfire_cnn(dilations, expected):
    from neural_reloc.methods.crossfire.feature_extractor import FeatureExtractor, receptive_field

    cnn = FeatureExtractor(dilations=dilations)
    assert trunk_receptive_field(cnn.backbone) == receptive_field(dilations) == cnn.receptive_field == expected
    # a strided 3x3 convolution: 3 px, then each next 3x3 adds 2 x its stride
    strided = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    assert trunk_receptive_field(strided) == 7
    with pytest.raises(ValueError, match="nested"):
        trunk_receptive_field(nn.Sequential(strided, nn.ReLU()))


def test_the_nerfmatch_encoder_field_covers_its_cells():
    """Three stride-2 stages and two dilated context convolutions (the encoder's docstring:
    ~100 px); its stride-2 padding-1 convolutions centre cell i at pixel 8i, not the block
    centre: half the field, rounded up to whole cells, still covers the block."""
    from neural_reloc.methods.nerfmatch.config import EncoderConfig
    from neural_reloc.methods.nerfmatch.encoder import ImageEncoder

    encoder = ImageEncoder(EncoderConfig())
    assert trunk_receptive_field(encoder.backbone) == encoder.receptive_field == 139


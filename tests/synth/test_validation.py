"""The validation anomalies: each marks exactly the pixels it changed, at its size and contrast."""

import numpy as np


def test_cut_paste_marks_exactly_the_pixels_it_changed_within_the_area_range():
    from mala.synth.validation import CUT_AREA, cut_paste

    rng = np.random.default_rng(0)
    for _ in range(20):
        image, donor = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
        pasted, mask = cut_paste(image, donor, rng)
        assert np.array_equal(mask, (pasted != image).any(-1))
        assert 0 < mask.mean() <= CUT_AREA[1] * 1.1


def on_plain_grounds(draw, grounds: tuple[int, ...], times: int = 10):
    """(ground, image, anomalous image, mask) of `times` of `draw(image)`'s anomalies on a plain image of each ground."""
    for ground in grounds:
        image = np.full((224, 224, 3), ground, dtype=np.uint8)
        for _ in range(times):
            yield ground, image, *draw(image)


def test_a_crack_is_thin_marks_exactly_what_it_changed_and_contrasts_with_its_ground():
    from mala.synth.validation import CRACK_LENGTH, crack

    rng = np.random.default_rng(0)
    for ground, image, cracked, mask in on_plain_grounds(lambda image: crack(image, rng), (230, 20)):
        assert np.array_equal(mask, (cracked != image).any(-1))
        assert 0 < mask.sum() <= 9 * CRACK_LENGTH[1]  # a walk of at most that many px, at most 3 px wide
        assert (cracked[mask] < ground).all() if ground > 127 else (cracked[mask] > ground).all()


def test_a_fainter_crack_changes_its_pixels_by_its_contrast_share_and_no_more():
    from mala.synth.validation import crack

    for ground in (230, 20):
        image = np.full((224, 224, 3), ground, dtype=np.uint8)
        for contrast in ((0.15, 0.4), (0.4, 0.8)):
            cracked, mask = crack(image, np.random.default_rng(1), contrast)
            room = ground if ground > 127 else 255 - ground  # the way to black, or to white
            change = np.abs(cracked[mask].astype(int) - ground) / room
            assert (change >= contrast[0] - 0.01).all() and (change <= contrast[1] + 0.01).all()


def test_a_shade_is_broad_soft_and_faint_and_marks_where_it_reaches_half_its_strength():
    from mala.synth.validation import SHADE_AREA, SHADE_CONTRAST, shade

    rng = np.random.default_rng(0)
    for ground, image, shaded, mask in on_plain_grounds(lambda image: shade(image, rng), (200, 40)):
        changed = (shaded != image).any(-1)
        assert (mask <= changed).all() and changed.sum() > mask.sum()  # the soft edge reaches beyond the mask
        assert SHADE_AREA[0] * 0.8 <= mask.mean() <= SHADE_AREA[1] * 1.2
        room = ground if ground > 127 else 255 - ground
        change = np.abs(shaded.astype(int) - ground).max(-1) / room
        assert change.max() <= SHADE_CONTRAST[1] + 0.01  # faint: at most its contrast share at the middle
        assert (change[mask] >= SHADE_CONTRAST[0] / 2 - 0.01).all()  # at least half of it inside the mask
        assert (shaded[mask] < ground).all() if ground > 127 else (shaded[mask] > ground).all()

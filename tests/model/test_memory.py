"""The memory's sections: each category's map reads only its own tokens and scale, and unknown images are routed to
the category of their nearest training image."""

from unittest import mock

import torch
import torch.nn.functional as F

from mala.model.memory import UNKNOWN, FeatureMemory, MemorySection, image_features

CHANNELS = 6


def two_sections() -> tuple[FeatureMemory, list[MemorySection]]:
    torch.manual_seed(0)
    sections = [MemorySection(torch.randn(3000, CHANNELS) + 4 * k, 0.5 + k,  # 3000 rows: more than one chunk
                              F.normalize(torch.randn(5, CHANNELS), dim=1)) for k in range(2)]
    memory = FeatureMemory(CHANNELS)
    memory.fill_sections(sections)
    return memory, sections


def brute_force(queries: torch.Tensor, section: MemorySection) -> torch.Tensor:
    return torch.cdist(queries.reshape(-1, CHANNELS), section.tokens).amin(1).reshape(queries.shape[:-1]) / section.scale


def test_a_named_section_reads_only_its_own_tokens_and_scale():
    memory, sections = two_sections()
    queries = torch.randn(4, 9, CHANNELS)
    for k, section in enumerate(sections):
        torch.testing.assert_close(memory.scaled_distance(queries, k), brute_force(queries, section), atol=1e-4, rtol=1e-4)
    per_image = torch.tensor([1, 0, 0, 1])
    expected = torch.stack([brute_force(queries[i], sections[k]) for i, k in enumerate(per_image.tolist())])
    torch.testing.assert_close(memory.scaled_distance(queries, per_image), expected, atol=1e-4, rtol=1e-4)


def test_routing_takes_the_section_of_the_nearest_training_image():
    memory, sections = two_sections()
    # images whose mean token points along a stored image feature of section 1, 0, 1
    wanted = [1, 0, 1]
    queries = torch.stack([sections[k].image_features[i] for i, k in enumerate(wanted)])[:, None, :].repeat(1, 9, 1)
    queries = queries + 0.01 * torch.randn_like(queries)
    assert memory.route(queries).tolist() == wanted
    expected = torch.stack([brute_force(queries[i], sections[k]) for i, k in enumerate(wanted)])
    torch.testing.assert_close(memory.scaled_distance(queries, None), expected, atol=1e-4, rtol=1e-4)
    # an image of a category the model does not know is routed too, the others keep their section
    known = torch.tensor([UNKNOWN, 1, UNKNOWN])
    mixed = torch.stack([brute_force(queries[0], sections[1]), brute_force(queries[1], sections[1]),
                         brute_force(queries[2], sections[1])])
    torch.testing.assert_close(memory.scaled_distance(queries, known), mixed, atol=1e-4, rtol=1e-4)


def test_the_exported_form_searches_every_section_and_keeps_each_image_its_own():
    memory, _ = two_sections()
    queries = torch.randn(5, 9, CHANNELS)
    sections = torch.tensor([0, 1, 1, 0, 1])
    eager = memory.scaled_distance(queries, sections)
    with mock.patch("torch.compiler.is_exporting", return_value=True):
        exported = memory.scaled_distance(queries, sections)
    torch.testing.assert_close(exported, eager, atol=1e-5, rtol=1e-5)


def test_image_features_are_unit_mean_tokens():
    tokens = torch.randn(3, 7, CHANNELS)
    features = image_features(tokens)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(features, tokens.mean(1) / tokens.mean(1).norm(dim=1, keepdim=True))


def test_sections_survive_a_state_dict_round_trip():
    memory, _ = two_sections()
    loaded = FeatureMemory(CHANNELS)
    state = memory.state_dict()
    loaded.make_room(state, "")
    loaded.load_state_dict(state)
    assert loaded.ends == memory.ends == [3000, 6000] and loaded.section_count == 2
    queries = torch.randn(2, 9, CHANNELS)
    torch.testing.assert_close(loaded.scaled_distance(queries, None), memory.scaled_distance(queries, None))


def test_a_memory_of_one_section_reads_it_whatever_section_is_named():
    memory = FeatureMemory(CHANNELS)
    rows = torch.randn(50, CHANNELS)
    memory.fill(rows, 2.0)
    queries = torch.randn(3, 4, CHANNELS)
    expected = torch.cdist(queries.reshape(-1, CHANNELS), rows).amin(1).reshape(3, 4) / 2.0
    for sections in (None, 1, torch.tensor([0, 1, UNKNOWN])):  # a model saved before sections, tested by category
        torch.testing.assert_close(memory.scaled_distance(queries, sections), expected, atol=1e-4, rtol=1e-4)

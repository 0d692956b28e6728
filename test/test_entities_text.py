"""Entity normalisation, the rule-based extractor, class labels and vocabularies (no models)."""

from __future__ import annotations

import pytest

from egmt_ros.core.classes import DEFAULT_CLASSES, class_of, multi_hot, parse_class_list
from egmt_ros.entities.extractor import (RuleEntityExtractor, get_extractor, merge_entities, normalize_entities,
                                         normalize_entity, singular, split_entity_list)
from egmt_ros.entities.sources import parse_vocabulary


@pytest.mark.parametrize("plural, single", [
    ("people", "person"), ("men", "man"), ("women", "woman"), ("children", "child"), ("cities", "city"),
    ("bodies", "body"), ("buses", "bus"), ("bus", "bus"), ("glass", "glass"), ("grass", "grass"),
    ("benches", "bench"), ("boxes", "box"), ("bushes", "bush"), ("cars", "car"), ("trees", "tree"),
    ("houses", "house"), ("bicycles", "bicycle"), ("series", "series"), ("policemen", "policeman"),
    ("leaves", "leaf"), ("person", "person"), ("dog", "dog"),
])
def test_singular(plural: str, single: str) -> None:
    assert singular(plural) == single


@pytest.mark.parametrize("phrase, expected", [
    ("Two People", "person"),
    ("the men", "man"),
    ("a large white car", "car"),
    ("Traffic Lights", "traffic light"),
    ("street lamps", "street lamp"),
    ("a tall street lamp", "street lamp"),
    ("a group of people", "person"),
    ("a man in a red shirt", "man"),
    ("cars parked", "car"),
    ("3 buses", "bus"),
    ("some grass", "grass"),
    ("the stop sign.", "stop sign"),
    ("light", "light"),
    ("white", None),
    ("two", None),
    ("a black and white photo", None),
    ("an infrared image", None),
    ("", None),
])
def test_normalize_entity(phrase: str, expected: str | None) -> None:
    assert normalize_entity(phrase) == expected


def test_normalize_dedup_order_and_cap() -> None:
    answer = ("Person, a person, PEOPLE, two men; the car / Cars, a tree and trees, bus, buses, street, road, sky, "
              "building, fence")
    phrases = split_entity_list(answer)
    assert phrases[:3] == ["Person", "a person", "PEOPLE"]
    assert normalize_entities(phrases) == ["person", "man", "car", "tree", "bus", "street", "road", "sky"]
    assert normalize_entities(phrases, max_entities=3) == ["person", "man", "car"]


def test_merge_entities_is_case_insensitive_union() -> None:
    assert merge_entities([["person", "Car"], ["car", "tree", "PERSON", "road"]]) == ["person", "car", "tree", "road"]
    assert len(merge_entities([[f"e{i}" for i in range(6)], [f"f{i}" for i in range(6)]])) == 8


@pytest.mark.parametrize("caption, expected", [
    ("a black and white photo of a man walking down a street next to a car", ["man", "street", "car"]),
    ("two men standing near a bus at night", ["man", "bus"]),
    ("cars parked along the road with trees", ["car", "road", "tree"]),
    ("a person riding a bicycle on a sidewalk under a street lamp", ["person", "bicycle", "sidewalk", "street lamp"]),
    ("an infrared image of a group of people crossing the road in front of a building",
     ["person", "road", "building"]),
    ("there is a kiosk and a traffic light", ["kiosk", "traffic light"]),
    ("A Person, a person and PEOPLE", ["person"]),
    ("", []),
])
def test_rule_extractor(caption: str, expected: list[str]) -> None:
    assert RuleEntityExtractor().extract(caption) == expected


def test_rule_extractor_caps_at_eight() -> None:
    caption = ", ".join(f"a {w}" for w in ("car", "tree", "dog", "bus", "road", "house", "fence", "sky", "boat",
                                           "bench"))
    assert RuleEntityExtractor().extract(caption) == ["car", "tree", "dog", "bus", "road", "house", "fence", "sky"]


def test_get_extractor_without_model_is_rule_based() -> None:
    ex = get_extractor(None)
    assert isinstance(ex, RuleEntityExtractor) and ex.id == "rules"
    assert ex.extract("a dog on the grass") == ["dog", "grass"]


def test_classes_and_multi_hot() -> None:
    assert DEFAULT_CLASSES[:2] == ["person", "car"] and len(DEFAULT_CLASSES) == 12
    assert class_of("pedestrian") == "person" and class_of("motorbike") == "motorcycle"
    assert class_of("tree") is None
    labels = multi_hot(["man", "car", "tree", "traffic light"])
    assert labels == [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert multi_hot(["person", "dog"], ["dog", "cat"]) == [1, 0]  # synonyms only count for classes in the list
    assert parse_class_list(None) == DEFAULT_CLASSES
    assert parse_class_list("Person, car ,traffic light") == ["person", "car", "traffic light"]
    with pytest.raises(ValueError):
        parse_class_list("car,car")


def test_parse_vocabulary() -> None:
    assert parse_vocabulary("Street, trees,the street,  ,People") == ["street", "tree", "person"]
    assert parse_vocabulary(None) == []

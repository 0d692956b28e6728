"""Class names and words: the class list of the multi-label head, how entities map onto it (pseudo-labels),
and the singular of an English noun (entity normalisation and text commands share it).

``DEFAULT_CLASSES`` are road-scene classes a COCO detector finds (the names are the detector's own class names, so
detector entities map onto them 1:1). The EGMT paper uses nine pseudo-label categories on MSRS without naming them;
egmt_ros uses these twelve by default. ``python -m egmt_ros.cli.annotate --classes ...`` writes another list into
the annotation file, and training reads the list from there.

Caption entities are free text ("man", "pedestrian", "motorbike"), so :data:`CLASS_SYNONYMS` maps a few common words
onto the class names before the multi-hot labels are made (:func:`multi_hot`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: The default multi-label classes (detector-derived road-scene classes, COCO names).
DEFAULT_CLASSES: list[str] = ["person", "car", "bus", "truck", "bicycle", "motorcycle", "traffic light",
                              "stop sign", "bench", "dog", "boat", "umbrella"]

#: Entity words that count as a class (entity text is already normalised: lower case, singular).
CLASS_SYNONYMS: dict[str, str] = {
    **{w: "person" for w in ("man", "woman", "child", "kid", "boy", "girl", "pedestrian", "people", "soldier",
                             "human", "lady", "guy")},
    **{w: "car" for w in ("automobile", "sedan", "taxi", "jeep", "suv", "hatchback")},
    **{w: "truck" for w in ("lorry", "pickup truck", "pickup")},
    "minibus": "bus",
    **{w: "bicycle" for w in ("bike", "cycle")},
    **{w: "motorcycle" for w in ("motorbike", "scooter", "moped")},
    **{w: "traffic light" for w in ("traffic signal", "stoplight", "traffic lights")},
    "puppy": "dog",
    **{w: "boat" for w in ("ship", "kayak", "canoe", "sailboat")},
}


def class_of(entity: str, classes: Sequence[str] = DEFAULT_CLASSES) -> str | None:
    """The class an entity text counts as (itself or a synonym of a class in ``classes``), else None."""
    text = entity.strip().lower()
    if text in classes:
        return text
    mapped = CLASS_SYNONYMS.get(text)
    return mapped if mapped in classes else None


def multi_hot(entities: Iterable[str], classes: Sequence[str] = DEFAULT_CLASSES) -> list[int]:
    """0/1 per class: 1 when any entity is that class or one of its synonyms (the multi-label pseudo-labels)."""
    present = {c for c in (class_of(e, classes) for e in entities) if c is not None}
    return [1 if c in present else 0 for c in classes]


def parse_class_list(text: str | None) -> list[str]:
    """``"person,car, traffic light"`` -> ``["person", "car", "traffic light"]``; None/empty -> DEFAULT_CLASSES.

    Raises ValueError on duplicates (labels would be ambiguous).
    """
    if not text:
        return list(DEFAULT_CLASSES)
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in {text!r}")
    return names


IRREGULAR_PLURALS: dict[str, str] = {
    "people": "person", "persons": "person", "men": "man", "women": "woman", "children": "child",
    "feet": "foot", "teeth": "tooth", "mice": "mouse", "geese": "goose", "oxen": "ox", "buses": "bus",
    "leaves": "leaf", "wolves": "wolf", "knives": "knife", "shelves": "shelf", "calves": "calf",
    "halves": "half", "lives": "life", "wives": "wife", "policemen": "policeman", "firemen": "fireman",
    "fishermen": "fisherman", "workmen": "workman", "horsemen": "horseman",
}
#: Words ending in s that are singular (or have no singular).
INVARIANT: frozenset[str] = frozenset("""
bus glass grass gas class boss dress cross moss news series species sheep deer fish aircraft
pants jeans shorts trousers scissors glasses sunglasses clothes binoculars headphones lens canvas chassis
atlas campus cactus bonus virus status walrus octopus tennis axis bus gps physics mathematics
""".split())


def singular(word: str) -> str:
    """Singular of an English noun by a small rule set (people->person, men->man, -ies->-y, -es/-s; exceptions)."""
    w = word.lower()
    if w in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[w]
    if w in INVARIANT or len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "ches", "shes", "xes", "zzes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w

"""Entities from a caption: Flan-T5 (as the EGMT paper) or a rule-based fallback, and one normaliser for both.

Normalisation (:func:`normalize_entity`, :func:`normalize_entities`), applied to every extracted phrase:

1. lower case; punctuation other than ``-`` and ``'`` becomes a space;
2. a phrase is cut before a preposition ("man in a red shirt" -> "man");
3. words of :data:`STOP_WORDS` (articles, determiners, counts, colours, sizes, a few participles) are removed,
   except the last word (the head noun: "traffic light" and "light" keep "light");
4. at most the last three words are kept (compound names such as "traffic light", "street lamp", "fire hydrant");
5. the head noun is made singular by a small rule set (:func:`singular`);
6. framing words that are no scene entity ("photo", "image", "picture", "view", "scene") are dropped;
7. case-insensitive de-duplication keeping the first occurrence, and at most ``max_entities`` (8, as the paper's
   "2-8 entities per pair").

:class:`T5EntityExtractor` prompts a seq2seq model (``AutoModelForSeq2SeqLM``) for a comma-separated list;
:class:`RuleEntityExtractor` parses noun phrases (determiners/numbers/adjectives + nouns) with a built-in lexicon of
scene nouns and needs no model or download. :func:`get_extractor` picks one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from egmt_ros.core.classes import singular
from egmt_ros.model.loading import ensure_offline, resolve_model, torch_dtype

ensure_offline()

MAX_ENTITIES = 8

#: Words removed from an entity phrase unless they are its last word.
STOP_WORDS: frozenset[str] = frozenset("""
a an the this that these those some any many several few various other another each every all both no
its their his her my our your one two three four five six seven eight nine ten eleven twelve dozen couple lot lots
number group bunch pair row line
large big small little tall tiny huge giant long short wide narrow high low
white black red green blue yellow orange grey gray brown pink purple silver golden gold dark bright
old young new empty full distant nearby single multiple
parked moving standing walking sitting running
""".split())

#: Words that end a noun phrase (prepositions, conjunctions).
PREPOSITIONS: frozenset[str] = frozenset("""
of in on at with near by next to from under over behind beside besides between along across through into onto
around above below beyond against among toward towards inside outside while during and or but
""".split())

#: Caption framing words that are not scene entities.
NON_ENTITIES: frozenset[str] = frozenset("""
photo photograph image picture view scene shot frame screenshot thermal infrared camera closeup close-up
something thing night day daytime nighttime background foreground top side front middle left right
""".split())


def _words(text: str) -> list[str]:
    """Lower-case words; punctuation other than - and ' becomes a space; possessive 's is dropped."""
    text = re.sub(r"'s\b", " ", text.lower())
    return [w.strip("-'") for w in re.sub(r"[^a-z0-9'\- ]+", " ", text).split() if w.strip("-'")]


def normalize_entity(phrase: str) -> str | None:
    """One entity phrase -> its normal form (see the module docstring), or None when nothing is left."""
    words = [w for w in _words(phrase) if not w.isdigit()]
    while True:  # cut before the first preposition; "group of people" continues after "of"
        cut = next((i for i, w in enumerate(words) if w in PREPOSITIONS), None)
        if cut is None:
            break
        head_part, words_after = words[:cut], words[cut + 1:]
        if words[cut] == "of" and all(w in STOP_WORDS for w in head_part):
            words = words_after
            continue
        words = head_part
        break
    while words and words[-1] in STOP_WORDS and len(words) > 1:
        words = words[:-1]  # "cars parked" -> "cars"
    if not words or (len(words) == 1 and words[0] in STOP_WORDS):
        return None
    kept = [w for w in words[:-1] if w not in STOP_WORDS] + [words[-1]]
    kept = kept[-3:]
    kept[-1] = singular(kept[-1])
    text = " ".join(kept)
    if text in NON_ENTITIES or kept[-1] in NON_ENTITIES:
        return None
    return text


def split_entity_list(text: str) -> list[str]:
    """Split a model's answer ("person, car; a tree and a dog") into phrases on , ; newline '|' and ' and '."""
    parts = re.split(r"[,;\n|/]+|\band\b|\bor\b|^\s*[-*]\s*", text, flags=re.IGNORECASE)
    return [p.strip() for p in parts if p and p.strip()]


def normalize_entities(phrases: Iterable[str], max_entities: int = MAX_ENTITIES) -> list[str]:
    """Normalise, drop empties, de-duplicate case-insensitively (first occurrence wins), keep ``max_entities``."""
    out: list[str] = []
    seen: set[str] = set()
    for phrase in phrases:
        ent = normalize_entity(phrase)
        if ent is None or ent in seen:
            continue
        seen.add(ent)
        out.append(ent)
        if len(out) >= max_entities:
            break
    return out


def merge_entities(lists: Iterable[Sequence[str]], max_entities: int = MAX_ENTITIES) -> list[str]:
    """Union of entity lists in order, case-insensitive de-duplication, at most ``max_entities``."""
    out: list[str] = []
    seen: set[str] = set()
    for lst in lists:
        for e in lst:
            key = e.strip().lower()
            if key and key not in seen and len(out) < max_entities:
                seen.add(key)
                out.append(key)
    return out


class EntityExtractor(Protocol):
    """Anything that turns a caption into normalised entity strings."""

    id: str

    def extract(self, caption: str) -> list[str]:
        """Normalised, de-duplicated entities of one caption (at most ``max_entities``)."""
        ...


# ---------------------------------------------------------------- rule-based fallback
#: Scene nouns (singular) the rule-based extractor accepts as a phrase head without further evidence.
SCENE_NOUNS: frozenset[str] = frozenset("""
person man woman child boy girl kid pedestrian cyclist rider driver soldier crowd human figure
car truck bus van taxi vehicle bicycle bike motorcycle motorbike scooter train tram trailer jeep tractor
boat ship airplane plane helicopter drone
dog cat horse cow sheep bird deer animal
tree bush shrub grass field forest wood hedge plant flower leaf branch
road street sidewalk pavement path lane crosswalk intersection highway parking lot driveway track railway
building house wall fence window door roof bridge tower chimney gate stair staircase pillar column shop store
sky cloud sun moon smoke fire fog water river lake sea ocean beach sand rock mountain hill snow ice
light lamp streetlight pole sign billboard bench umbrella bag backpack box barrel container tent
hydrant cone barrier post wire cable table chair
""".split()) | {"traffic light", "stop sign", "street lamp", "street light", "fire hydrant", "parking lot"}

#: Words that end a noun phrase in the rule-based parser (verbs, pronouns, adverbs, relative words).
_BREAK_WORDS: frozenset[str] = frozenset("""
is are was were be been being has have had do does did can could will would may might there here it they he she we
you i them who which that what where when while as than then so very also just not only up down out away back
stands stand sits sit walks walk rides ride drives drive looks look appears appear seems seem holds hold carries
carry crosses cross waits wait shows show
""".split())


def _is_noun_candidate(w: str) -> bool:
    return not (w in _BREAK_WORDS or w in PREPOSITIONS or w.isdigit()
                or (w.endswith("ing") and singular(w) not in SCENE_NOUNS)
                or (w.endswith("ly") and len(w) > 4) or (w.endswith("ed") and w not in SCENE_NOUNS))


class RuleEntityExtractor:
    """Noun phrases of a caption by a small grammar, no model: ``(DET|NUM|ADJ)* NOUN+``.

    A phrase is a maximal run of words between prepositions, conjunctions, verbs and adverbs; its head is its last
    word. The phrase is kept when its (singular) head or its last two words are a known scene noun
    (:data:`SCENE_NOUNS`), or when a determiner/number/adjective of :data:`STOP_WORDS` precedes an unknown noun
    ("a kiosk" keeps "kiosk"). The result goes through the same normaliser as the model's output.
    """

    id = "rules"

    def __init__(self, max_entities: int = MAX_ENTITIES) -> None:
        self.max_entities = max_entities

    def phrases(self, caption: str) -> list[str]:
        """The raw noun phrases the grammar accepts, in caption order."""
        phrases: list[str] = []
        run: list[str] = []

        def flush() -> None:
            while run and run[-1] in STOP_WORDS:
                run.pop()  # "cars parked" -> "cars"
            if not run:
                return
            has_det = any(w in STOP_WORDS for w in run[:-1])
            nouns = [w for w in run if w not in STOP_WORDS or w == run[-1]]
            head = singular(nouns[-1])
            two = " ".join(nouns[-2:-1] + [head]) if len(nouns) >= 2 else head
            if (two in SCENE_NOUNS or head in SCENE_NOUNS
                    or (has_det and head not in STOP_WORDS and head not in NON_ENTITIES and len(head) > 2)):
                phrases.append(" ".join(run))
            run.clear()

        for clause in re.split(r"[,;:.!?()\[\]\n\"]+", caption):  # punctuation ends a phrase
            for w in _words(clause):
                if _is_noun_candidate(w) or w in STOP_WORDS:
                    run.append(w)
                else:
                    flush()
            flush()
        return phrases

    def extract(self, caption: str) -> list[str]:
        """Normalised entities of one caption."""
        return normalize_entities(self.phrases(caption), self.max_entities)


# ---------------------------------------------------------------- Flan-T5
DEFAULT_EXTRACTOR_PROMPT = ("List the objects, people, animals and places mentioned in the text, "
                            "separated by commas.\nText: {caption}\nEntities:")


class T5EntityExtractor:
    """Entities by a seq2seq model (Flan-T5 as the paper): prompt -> comma-separated list -> normaliser.

    ``prompt`` must contain ``{caption}``. ``model`` is a Hugging Face id in the local cache or a local folder.
    """

    def __init__(self, model: str, prompt: str = DEFAULT_EXTRACTOR_PROMPT, max_new_tokens: int = 32,
                 num_beams: int = 1, device: str = "cpu", dtype: str | None = "float32",
                 max_entities: int = MAX_ENTITIES) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        if "{caption}" not in prompt:
            raise ValueError("the extractor prompt must contain '{caption}'")
        self.id = str(model)
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.num_beams = int(num_beams)
        self.max_entities = max_entities
        self.device = torch.device(device)
        folder = resolve_model(model, kind="entity extractor (Flan-T5)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), dtype=torch_dtype(dtype)).to(self.device)
        self.model.eval()
        self.last_raw: str = ""

    def raw(self, caption: str) -> str:
        """The model's unparsed answer for one caption."""
        import torch

        enc = self.tokenizer(self.prompt.format(caption=caption), return_tensors="pt", truncation=True,
                             max_length=512).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                      do_sample=False)
        return self.tokenizer.decode(out[0], skip_special_tokens=True)

    def extract(self, caption: str) -> list[str]:
        """Normalised, de-duplicated entities of one caption (empty captions give none)."""
        if not caption or not caption.strip():
            return []
        self.last_raw = self.raw(caption)
        return normalize_entities(split_entity_list(self.last_raw), self.max_entities)


def get_extractor(model: str | None = None, **kwargs: object) -> EntityExtractor:
    """``T5EntityExtractor(model, **kwargs)`` when a model is configured, else :class:`RuleEntityExtractor`."""
    if model in (None, "", "rules", "none"):
        return RuleEntityExtractor(max_entities=int(kwargs.get("max_entities", MAX_ENTITIES)))  # type: ignore[arg-type]
    return T5EntityExtractor(str(model), **kwargs)  # type: ignore[arg-type]

"""Text commands -> (task, region, steps): a small grammar that works offline (ROS-free).

Grammar (case-insensitive, punctuation ignored)::

    command   := "reset" ... | [intensity] task-phrase [intensity] [preposition target] | target-first forms
    task      := one of TASK_PHRASES (verbs and nouns: "more infrared", "stand out", "brighten", "denoise", ...)
    target    := "everything" | "background" | a class or entity word ("people", "pedestrians", "vehicles", ...)
    intensity := "slightly" | "a bit" (1 step, the default) | "much" | "a lot" | "strongly" | "very" (2 steps)

Targets resolve in this order: exact class/entity word, its singular, a group word (vehicles), the class
synonyms of ``egmt_ros.core.classes``, then the text
encoder's cosine similarity to the known words (>= ``min_similarity``) when an encoder is given.
Scene "stuff" words (road, sky, street, ...) have no detector boxes: they map to the background region and
the answer says so. A command whose task or target cannot be resolved is answered and nothing is applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from egmt_ros.core.classes import class_of
from egmt_ros.core.classes import singular
from egmt_ros.fusion.terf import Region

#: Phrases per task, longest first when matching.
TASK_PHRASES: dict[str, tuple[str, ...]] = {
    "reset": ("reset", "clear all", "clear", "undo all", "restore", "back to normal", "default"),
    "ir": ("more infrared", "more thermal", "infrared inclination", "stand out", "pop out", "highlight",
           "emphasize", "emphasise", "hotter", "more ir", "towards infrared", "toward infrared", "thermal"),
    "vi": ("more visible", "more texture", "more detail", "visible inclination", "less infrared", "less thermal",
           "towards visible", "toward visible", "more rgb", "more color", "more colour", "natural"),
    "brighten": ("brighten", "brighter", "lighten", "lighter", "enhance illumination", "more light",
                 "increase brightness", "illuminate", "enhance the illumination"),
    "darken": ("darken", "darker", "dim", "reduce illumination", "reduce brightness", "less bright",
               "reduce glare", "reduce exposure", "less light", "reduce the illumination", "tone down"),
    "denoise": ("denoise", "remove the noise", "remove noise", "less noise", "reduce noise", "reduce the noise",
                "clean up", "noise removal", "smooth"),
}
STRONG = ("a lot", "much", "strongly", "very", "way", "significantly", "a lot more")
WHOLE = ("everything", "everywhere", "whole image", "whole frame", "entire image", "all", "image", "scene", "picture")
BACKGROUND = ("background", "backdrop", "surroundings", "rest")
STUFF = ("road", "street", "sky", "ground", "grass", "tree", "trees", "building", "buildings", "wall", "field",
         "forest", "water", "smoke", "fog", "sidewalk", "pavement")
#: Words that name a group of classes (single-class synonyms come from ``egmt_ros.core.classes``).
GROUPS = {
    "vehicle": "car|truck|bus|motorcycle", "traffic": "car|truck|bus|motorcycle",
    "cyclist": "person|bicycle", "rider": "person|motorcycle|bicycle", "animal": "dog|cat|horse|cow|sheep",
}
PREPOSITIONS = ("on", "in", "for", "of", "around", "at", "over")
FILLER = {"the", "a", "an", "make", "please", "can", "you", "more", "so", "they", "it", "them", "that", "to",
          "and", "be", "is", "are", "some", "bit", "little", "slightly", "lot", "much", "very", "strongly", "way"}

Encoder = Callable[[Sequence[str]], np.ndarray]


@dataclass
class ParsedCommand:
    """What a command was understood as. ``ok`` is True only when something can be applied."""

    text: str
    task: str | None = None
    region: Region | None = None
    steps: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.task == "reset" or (self.task is not None and self.region is not None)

    def answer(self) -> str:
        """A one-line human answer (the reply of the command service / feedback topic)."""
        parts = [f"task={self.task or '?'}"]
        if self.task != "reset":
            parts.append(f"target={self.region.key() if self.region else '?'}")
            parts.append(f"steps={self.steps}")
        head = "applied" if self.ok else "not applied"
        return f"{head}: " + " ".join(parts) + ("; " + "; ".join(self.notes) if self.notes else "")


class CommandParser:
    """Grammar parser with class/entity vocabulary and an optional text encoder for synonyms."""

    def __init__(self, classes: Sequence[str], encoder: Encoder | None = None, min_similarity: float = 0.5) -> None:
        self.classes = [c.lower() for c in classes]
        self.encoder = encoder
        self.min_similarity = min_similarity
        self._phrases = sorted(((p, t) for t, ps in TASK_PHRASES.items() for p in ps), key=lambda x: -len(x[0]))

    def set_vocabulary(self, words: Sequence[str]) -> None:
        """Known class and entity words (e.g. detector classes + current entities)."""
        self.classes = sorted({w.lower() for w in words})

    def parse(self, text: str) -> ParsedCommand:
        cmd = ParsedCommand(text=text)
        norm = " " + re.sub(r"[^a-z0-9 ]+", " ", text.lower()).strip() + " "
        norm = re.sub(r"\s+", " ", norm)
        for phrase, task in self._phrases:
            if f" {phrase} " in norm:
                cmd.task = task
                norm = norm.replace(f" {phrase} ", " ", 1)
                break
        if cmd.task is None:
            cmd.notes.append("no known task (try: more infrared, more visible, brighten, darken, denoise, reset)")
        if cmd.task == "reset":
            return cmd
        if any(f" {s} " in norm for s in STRONG):
            cmd.steps = 2
        cmd.region = self._region(norm, cmd)
        return cmd

    def _region(self, norm: str, cmd: ParsedCommand) -> Region | None:
        words = [w for w in norm.split() if w not in FILLER and w not in PREPOSITIONS]
        if not words or any(f" {w} " in norm for w in WHOLE):
            return Region("everything")
        if any(w in BACKGROUND for w in words):
            return Region("background")
        found: list[str] = []
        for w in words:
            resolved = self._resolve(w, cmd)
            if resolved == ["background"]:
                return Region("background")
            if resolved:
                found.extend(resolved)
        if found:
            return Region("classes", tuple(sorted(set(found))))
        cmd.notes.append(f"unknown target {' '.join(words)!r} (known: {', '.join(self.classes[:20])}, "
                         "background, everything)")
        return None

    def _resolve(self, word: str, cmd: ParsedCommand) -> list[str] | None:
        if word in self.classes:
            return [word]
        base = singular(word)
        if base in GROUPS:
            return [c for c in GROUPS[base].split("|") if c in self.classes] or GROUPS[base].split("|")[:1]
        cls = class_of(base, self.classes) or class_of(base)
        if cls:
            return [cls]
        if word in STUFF:
            cmd.notes.append(f"'{word}' has no detector boxes: applied to the background region")
            return ["background"]
        if self.encoder is not None and self.classes:
            emb = self.encoder([word] + self.classes)
            sims = emb[1:] @ emb[0] / (np.linalg.norm(emb[1:], axis=1) * np.linalg.norm(emb[0]) + 1e-9)
            best = int(np.argmax(sims))
            if sims[best] >= self.min_similarity:
                cmd.notes.append(f"'{word}' -> {self.classes[best]} (text similarity {sims[best]:.2f})")
                return [self.classes[best]]
        return None

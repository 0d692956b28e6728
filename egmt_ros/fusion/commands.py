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

Hostile or careless text costs little: :class:`CommandGate` refuses commands longer than ``MAX_COMMAND_CHARS`` or
faster than its rate before any parsing, the parser looks at ``MAX_TARGET_WORDS`` target words at most and asks the
encoder once per command for at most ``MAX_ENCODED_WORDS`` unknown words, and answers quote at most
``ECHO_CHARS`` of the text (:func:`echo`). The parser is safe to call from any thread without the caller's lock.
"""

from __future__ import annotations

import re
import threading
import time
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

#: Longest command accepted (characters); a longer one is refused unparsed.
MAX_COMMAND_CHARS = 200
#: Target words looked at per command; unknown words resolved by the text encoder per command (one batch).
MAX_TARGET_WORDS, MAX_ENCODED_WORDS = 8, 3
#: Characters of a command quoted back in answers and logs.
ECHO_CHARS = 60


def echo(text: str) -> str:
    """A short, printable quote of ``text`` for answers and logs (never the whole of a long command)."""
    short = text[:ECHO_CHARS]
    return repr(short) + (f"... ({len(text)} chars)" if len(text) > ECHO_CHARS else "")


class CommandGate:
    """Admission of commands before parsing: at most ``max_chars`` characters, and a token bucket of ``burst``
    commands refilled at ``rate_hz``. :meth:`admit` returns '' or the reason of the refusal; thread-safe."""

    def __init__(self, max_chars: int = MAX_COMMAND_CHARS, rate_hz: float = 5.0, burst: int = 5) -> None:
        self.max_chars, self.rate_hz, self.burst = max_chars, rate_hz, burst
        self._tokens, self._t, self._answered = float(burst), time.monotonic(), float("-inf")
        self._lock = threading.Lock()
        self.refused = 0

    def admit(self, text: str, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._tokens = min(self.burst, self._tokens + max(0.0, now - self._t) * self.rate_hz)
            self._t = now
            if len(text) > self.max_chars:
                why = f"command too long ({len(text)} chars, at most {self.max_chars})"
            elif self._tokens < 1.0:
                why = f"too many commands (at most {self.rate_hz:g} per second, bursts of {self.burst})"
            else:
                self._tokens -= 1.0
                return ""
            self.refused += 1
            return f"not applied: {why}: {echo(text)} ({self.refused} refused so far)"

    def should_answer(self, now: float | None = None) -> bool:
        """Whether to publish the answer of a refusal: at most ``rate_hz`` answers a second (a flood of commands
        must not become a flood of answers)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if now - self._answered < 1.0 / self.rate_hz:
                return False
            self._answered = now
            return True


@dataclass
class ParsedCommand:
    """What a command was understood as. ``ok`` is True only when something can be applied."""

    text: str
    task: str | None = None
    region: Region | None = None
    steps: int = 1
    notes: list[str] = field(default_factory=list)
    refused: str = ""  # why a well-formed command was still not applied (e.g. the effect limit)

    @property
    def ok(self) -> bool:
        return not self.refused and (self.task == "reset" or (self.task is not None and self.region is not None))

    def answer(self) -> str:
        """A one-line human answer (the reply of the command service / feedback topic)."""
        parts = [f"task={self.task or '?'}"]
        if self.task != "reset":
            parts.append(f"target={self.region.key() if self.region else '?'}")
            parts.append(f"steps={self.steps}")
        head = "applied" if self.ok else "not applied"
        notes = self.notes + ([self.refused] if self.refused else [])
        return f"{head}: {echo(self.text)} -> " + " ".join(parts) + ("; " + "; ".join(notes) if notes else "")


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
        if len(text) > MAX_COMMAND_CHARS:
            cmd.notes.append(f"command too long ({len(text)} chars, at most {MAX_COMMAND_CHARS})")
            return cmd
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
        if len(words) > MAX_TARGET_WORDS:
            cmd.notes.append(f"only the first {MAX_TARGET_WORDS} target words were read")
            words = words[:MAX_TARGET_WORDS]
        classes = self.classes  # one vocabulary for the whole command (set_vocabulary may run meanwhile)
        found: list[str] = []
        unknown: list[str] = []
        for w in words:
            resolved = self._resolve(w, classes, cmd)
            if resolved == ["background"]:
                return Region("background")
            if resolved:
                found.extend(resolved)
            else:
                unknown.append(w)
        if not found and unknown:
            found = self._similar(unknown[:MAX_ENCODED_WORDS], classes, cmd)
        if found:
            return Region("classes", tuple(sorted(set(found))))
        cmd.notes.append(f"unknown target {echo(' '.join(words))} (known: {', '.join(classes[:20])}, "
                         "background, everything)")
        return None

    @staticmethod
    def _resolve(word: str, classes: list[str], cmd: ParsedCommand) -> list[str] | None:
        if word in classes:
            return [word]
        base = singular(word)
        if base in GROUPS:
            return [c for c in GROUPS[base].split("|") if c in classes] or GROUPS[base].split("|")[:1]
        cls = class_of(base, classes) or class_of(base)
        if cls:
            return [cls]
        if word in STUFF:
            cmd.notes.append(f"'{word}' has no detector boxes: applied to the background region")
            return ["background"]
        return None

    def _similar(self, words: list[str], classes: list[str], cmd: ParsedCommand) -> list[str]:
        """Known classes the text encoder finds similar to ``words`` (one encoder call for all of them)."""
        if self.encoder is None or not classes:
            return []
        emb = np.asarray(self.encoder(list(words) + list(classes)), dtype=np.float32)
        q, c = emb[: len(words)], emb[len(words):]
        sims = (q @ c.T) / (np.linalg.norm(q, axis=1, keepdims=True) * np.linalg.norm(c, axis=1) + 1e-9)
        found = []
        for word, row in zip(words, sims):
            best = int(np.argmax(row))
            if row[best] >= self.min_similarity:
                cmd.notes.append(f"'{word}' -> {classes[best]} (text similarity {row[best]:.2f})")
                found.append(classes[best])
        return found

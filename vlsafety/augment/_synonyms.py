"""A small built-in synonym table for synonym substitution (no WordNet download).

Lower-case headwords; each maps to replacements that keep the sentence grammatical in
the usual question forms of safety prompts. Edit freely: the table's hash enters every
augmented candidate id (:data:`SYNONYMS_VERSION`), so rows made with an old table are not
mistaken for new ones.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["SYNONYMS", "SYNONYMS_VERSION"]

SYNONYMS: dict[str, tuple[str, ...]] = {
    "acquire": ("obtain", "get hold of"),
    "attack": ("assault", "strike"),
    "avoid": ("evade", "dodge"),
    "best": ("most effective", "optimal"),
    "big": ("large", "huge"),
    "break": ("smash", "crack"),
    "build": ("construct", "assemble"),
    "buy": ("purchase", "acquire"),
    "car": ("vehicle", "automobile"),
    "caught": ("detected", "noticed"),
    "child": ("kid", "youngster"),
    "children": ("kids", "youngsters"),
    "computer": ("machine", "PC"),
    "convince": ("persuade", "talk into"),
    "create": ("make", "produce"),
    "dangerous": ("hazardous", "risky"),
    "describe": ("explain", "outline"),
    "destroy": ("wreck", "demolish"),
    "detailed": ("thorough", "in-depth"),
    "doctor": ("physician", "medic"),
    "door": ("entrance", "doorway"),
    "drug": ("substance", "medication"),
    "easy": ("simple", "effortless"),
    "explain": ("describe", "spell out"),
    "fake": ("counterfeit", "bogus"),
    "fast": ("quick", "rapid"),
    "find": ("locate", "track down"),
    "friend": ("pal", "buddy"),
    "get": ("obtain", "acquire"),
    "guide": ("manual", "walkthrough"),
    "help": ("assist", "aid"),
    "hide": ("conceal", "stash"),
    "home": ("house", "residence"),
    "house": ("home", "residence"),
    "hurt": ("harm", "injure"),
    "idea": ("notion", "concept"),
    "illegal": ("unlawful", "illicit"),
    "image": ("picture", "photo"),
    "instructions": ("directions", "guidelines"),
    "item": ("object", "thing"),
    "items": ("objects", "things"),
    "know": ("understand", "be aware of"),
    "learn": ("find out", "discover"),
    "make": ("create", "produce"),
    "medicine": ("medication", "remedy"),
    "method": ("technique", "approach"),
    "money": ("cash", "funds"),
    "need": ("require", "have to have"),
    "news": ("report", "story"),
    "open": ("unlock", "pry open"),
    "people": ("folks", "individuals"),
    "person": ("individual", "someone"),
    "phone": ("mobile", "handset"),
    "photo": ("picture", "image"),
    "picture": ("image", "photo"),
    "place": ("location", "spot"),
    "plan": ("scheme", "strategy"),
    "poison": ("toxin", "toxic substance"),
    "police": ("authorities", "cops"),
    "post": ("message", "update"),
    "quick": ("fast", "rapid"),
    "quickly": ("rapidly", "swiftly"),
    "secret": ("hidden", "covert"),
    "secretly": ("covertly", "discreetly"),
    "show": ("demonstrate", "display"),
    "small": ("little", "tiny"),
    "spread": ("circulate", "disseminate"),
    "start": ("begin", "launch"),
    "steal": ("take", "swipe"),
    "steps": ("stages", "phases"),
    "stop": ("halt", "end"),
    "story": ("account", "tale"),
    "tell": ("inform", "let know"),
    "true": ("real", "genuine"),
    "use": ("employ", "utilize"),
    "want": ("wish", "would like"),
    "way": ("method", "approach"),
    "weapon": ("armament", "arm"),
    "write": ("compose", "draft"),
}

SYNONYMS_VERSION = hashlib.sha256(json.dumps(SYNONYMS, sort_keys=True).encode("utf-8")).hexdigest()[
    :12
]

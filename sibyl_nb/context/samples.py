"""A 20-turn travel-planning conversation with one fact per user turn, and the words that show
each fact survived (all of them must appear in what a strategy sends)."""

from __future__ import annotations

from typing import Any

__all__ = ["FACT_TURNS", "FACTS", "conversation"]

# (user message, the fact's evidence: every string must appear, case-insensitively)
FACT_TURNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Hi! My name is Priya Raman and I am planning a trip to Japan.", ("Priya Raman",)),
    ("I land at Haneda at 6:40 on March 3.", ("Haneda", "6:40")),
    ("My budget is 2,400 dollars for the whole week.", ("2,400",)),
    ("I am allergic to shellfish, so please keep that in mind for restaurants.", ("shellfish",)),
    ("We decided to stay in Shinjuku rather than Shibuya.", ("Shinjuku",)),
    ("My sister Anika is joining me on March 5.", ("Anika", "March 5")),
    ("I prefer trains over buses, even if they cost more.", ("prefer trains",)),
    ("Our hotel is the Keio Plaza, booked for six nights.", ("Keio Plaza",)),
    ("I want to see Mount Fuji on March 7.", ("Fuji", "March 7")),
    ("My favourite food is ramen, especially tonkotsu.", ("tonkotsu",)),
    ("Anika's flight number is NH 212.", ("NH 212",)),
    ("We chose the 7-day JR Pass, which costs 50,000 yen.", ("50,000",)),
    ("I work as a nurse at St. Mary's hospital in Leeds.", ("nurse",)),
    ("I need to be back home by March 10 for a shift.", ("March 10",)),
    ("Please remember that I do not eat beef.", ("beef",)),
    ("The hotel check-in is at 3 pm.", ("3 pm",)),
    ("My phone number for the trip is 080-5555-0142.", ("080-5555-0142",)),
    ("We agreed to spend one day in Kyoto on March 8.", ("Kyoto", "March 8")),
    ("I would like a quiet onsen for the last night.", ("onsen",)),
    ("The emergency contact is my husband Tom, at home in Leeds.", ("Tom",)),
)

_FILLER = (
    "Japan has an excellent rail network, and most regions are easy to reach in a few hours.",
    "Many travellers find that planning each day around one main sight keeps the pace comfortable.",
    "Local tourist offices can help with maps, timetables and seasonal events along the way.",
    "Convenience stores are everywhere and sell snacks, drinks and travel essentials at fair prices.",
)

FACTS: tuple[tuple[str, ...], ...] = tuple(evidence for _, evidence in FACT_TURNS)


def conversation() -> list[dict[str, Any]]:
    """40 messages: each user turn states one fact; each reply acknowledges it and adds filler."""
    out: list[dict[str, Any]] = []
    for i, (text, _) in enumerate(FACT_TURNS):
        out.append({"role": "user", "content": text})
        filler = " ".join(_FILLER[(i + k) % len(_FILLER)] for k in range(3))
        out.append({"role": "assistant", "content": f"Thanks, noted. {filler} What else should I plan?"})
    return out

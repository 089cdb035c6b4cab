"""Counts in words: "1 epoch", "2 epochs", so that no summary says "1 epochs"."""
from __future__ import annotations


def count(n, noun: str, plural: str | None = None) -> str:
    """``count(1, "epoch")`` -> "1 epoch"; ``count(3, "epoch")`` -> "3 epochs"; ``plural`` for irregular nouns."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"

"""Learnt: a value derived once per key, and a bound on the keys kept."""

from __future__ import annotations

from codexlb.memo import Learnt


def test_a_value_is_derived_once_per_key() -> None:
    calls: list[str] = []

    def derive(key: str) -> str:
        calls.append(key)
        return key.lower()

    learnt = Learnt(derive)
    assert [learnt["A"], learnt["A"], learnt["B"]] == ["a", "a", "b"]
    assert calls == ["A", "B"] and learnt.get("C") is None


def test_the_keys_kept_are_bounded() -> None:
    learnt: Learnt[int, int] = Learnt(lambda n: n * 2, limit=3)
    assert [learnt[n] for n in range(10)] == [n * 2 for n in range(10)]
    assert len(learnt) <= 3

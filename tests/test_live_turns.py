"""Turns from GPT-Live's timed transcript fragments: the gap rule."""

from __future__ import annotations

from voiceconv.session.live_turns import TurnBuilder


def texts(turns: list) -> list[tuple[str, str]]:
    return [(t.speaker, t.text) for t in turns]


def test_fragments_within_the_gap_make_one_turn() -> None:
    b = TurnBuilder(gap_ms=800)
    assert b.add("caller", "I", 0, 100) == []
    assert b.add("caller", " would", 100, 300) == []
    assert b.add("caller", " like", 1000, 1200) == []  # 700 ms pause: still the same turn
    assert texts(b.flush()) == [("caller", "I would like")]


def test_a_pause_longer_than_the_gap_starts_a_new_turn() -> None:
    b = TurnBuilder(gap_ms=800)
    b.add("caller", "Hello.", 0, 500)
    done = b.add("caller", "Anyone there?", 1301, 2000)  # 801 ms after the end
    assert texts(done) == [("caller", "Hello.")]
    assert texts(b.flush()) == [("caller", "Anyone there?")]


def test_exactly_the_gap_continues_the_turn() -> None:
    b = TurnBuilder(gap_ms=800)
    b.add("assistant", "One", 0, 100)
    assert b.add("assistant", " two", 900, 1000) == []
    assert texts(b.flush()) == [("assistant", "One two")]


def test_the_other_speaker_ends_the_open_turn() -> None:
    b = TurnBuilder(gap_ms=800)
    b.add("assistant", "Let me tell you", 0, 900)
    done = b.add("caller", "Stop", 500, 700)  # overlapping: a barge-in
    assert texts(done) == [("assistant", "Let me tell you")]
    done = b.add("assistant", "Sure.", 1500, 1800)
    assert texts(done) == [("caller", "Stop")]


def test_whitespace_is_normalised_and_empty_turns_dropped() -> None:
    b = TurnBuilder(gap_ms=800)
    b.add("caller", "  ", 0, 10)
    assert b.add("assistant", "Hi", 20, 30) == []  # the blank caller turn is not a turn
    b.add("assistant", "  there  ", 30, 40)
    assert texts(b.flush()) == [("assistant", "Hi there")]


def test_tag_is_the_first_fragments() -> None:
    b = TurnBuilder()
    b.add("assistant", "a", 0, 1, tag="live_1")
    b.add("assistant", "b", 2, 3, tag="live_2")
    (turn,) = b.flush()
    assert turn.tag == "live_1" and (turn.start_ms, turn.end_ms) == (0, 3)

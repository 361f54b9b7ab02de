"""Strings from files and requests are printed with their control characters escaped."""

from visiontl.text import printable


def test_control_and_format_characters_are_escaped() -> None:
    assert printable("cat") == "cat"
    assert printable("a b\u00e9") == "a b\u00e9"  # spaces and letters of any script stay
    assert printable("x\x1b[2Jy") == "x\\x1b[2Jy"  # ESC cannot clear the terminal
    assert printable("dog\nAP 1.0000 (forged)") == "dog\\nAP 1.0000 (forged)"  # one line, not two
    assert printable("evil\u202egpj.exe") == "evil\\u202egpj.exe"  # a bidi override cannot reorder the name
    assert printable("nul\x00\r") == "nul\\x00\\r"
    assert printable("bad\udcff") == "bad\\udcff"  # an undecodable byte of a file name (surrogateescape)


def test_long_values_are_cut() -> None:
    assert printable("a" * 10, limit=4) == "aaaa…"
    assert printable(12345) == "12345"

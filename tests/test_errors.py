"""`trtopt.errors.first_line`: how other libraries' many-line messages become trtopt's one line."""
from __future__ import annotations

from trtopt.errors import first_line


def test_first_line_quotes_the_start_of_a_long_message() -> None:
    error = RuntimeError("\n  Error(s) in loading state_dict:\n\tMissing key(s): 'fc.weight'\nadvice\n")
    assert first_line(error) == "Error(s) in loading state_dict:"
    assert first_line(error, lines=2) == "Error(s) in loading state_dict: Missing key(s): 'fc.weight'"
    message = "[ONNXRuntimeError] : 1 : FAIL : node Conv_3\nstack"
    assert first_line(message) == "[ONNXRuntimeError] : 1 : FAIL : node Conv_3"


def test_an_empty_message_gives_the_type_name_or_the_fallback() -> None:
    assert first_line(ValueError()) == "ValueError"
    assert first_line(EOFError("  \n ")) == "EOFError"
    assert first_line(ValueError(), "not a pickle torch can read") == "not a pickle torch can read"
    assert first_line("") == "" and first_line(" \n", "fallback") == "fallback"

"""pycni.cni.jsonio (the C scanner/encoder driven directly) against the json module."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.cni import jsonio
from tests.support.interpreter import python_output

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(json_values)
def test_round_trips_like_json(value: object) -> None:
    text = jsonio.dumps(value)
    assert json.loads(text) == value
    assert jsonio.loads(text) == json.loads(json.dumps(value))
    assert jsonio.loads(text.encode()) == value


@given(st.text(max_size=40))
def test_accepts_and_rejects_like_json(text: str) -> None:
    try:
        expected = json.loads(text)
    except (ValueError, RecursionError):
        with pytest.raises(jsonio.JSONError):
            jsonio.loads(text)
        return
    if "NaN" in text or "Infinity" in text:  # json accepts these constants; ours refuses
        return
    assert jsonio.loads(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "{",
        '{"a": 1} x',
        "[1,]",
        "NaN",
        '{"a": Infinity}',
        '"\\ud800',
        '"\x00"',
        "[" * 100_000,
        "1" * 5000,
    ],
)
def test_bad_documents_raise_jsonerror(text: str) -> None:
    with pytest.raises(jsonio.JSONError):
        jsonio.loads(text)


def test_not_utf8_is_an_error() -> None:
    with pytest.raises(jsonio.JSONError):
        jsonio.loads(b'{"a": "\xff"}')


def test_dumps_refuses_nan_and_unknown_types() -> None:
    with pytest.raises(ValueError):
        jsonio.dumps(float("nan"))
    with pytest.raises(TypeError):
        jsonio.dumps({"a": object()})


def test_errors_without_the_json_package_loaded() -> None:
    """On the call path nothing has imported `json`; _json still has to report bad input."""
    code = (
        "import sys\n"
        "from pycni.cni import jsonio\n"
        "assert 'json' not in sys.modules\n"
        "for text in ['{', '\"abc', '[1,]']:\n"
        "    try:\n"
        "        jsonio.loads(text)\n"
        "    except jsonio.JSONError as err:\n"
        "        print(err)\n"
    )
    assert len(python_output(code).splitlines()) == 3

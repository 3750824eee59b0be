"""Unit tests of the safe evaluator behind ``max_docks``: arithmetic works, nothing else runs."""

import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plancton.config.expression import MAX_DEPTH, MAX_MAGNITUDE, evaluate
from plancton.errors import ExpressionError

NAMES = {"ncpus": 8.0, "ram_bytes": 16.0 * 2**30, "swap_bytes": 0.0, "max_dock_mem": 2.0 * 2**30, "max_dock_swap": 0.0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4", 4),
        ("2.5", 2.5),
        ("ncpus - 2", 6),
        ("max(1, ncpus - 2)", 6),
        ("min(ncpus, ram_bytes // max_dock_mem)", 8),
        ("ram_bytes / max_dock_mem", 8),
        ("(ncpus + 1) * 2 % 5", 3),
        ("floor(ncpus / 3)", 2),
        ("ceil(ncpus / 3)", 3),
        ("-ncpus + +10", 2),
        ("min(1, 2, 3, 0.5)", 0.5),
        ("  ncpus  ", 8),
        ("(" * 90 + "ncpus" + ")" * 90, 8),
    ],
)
def test_arithmetic_over_the_host_names(text: str, expected: float) -> None:
    assert evaluate(text, NAMES) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("__import__('os').system('touch /tmp/plancton-pwned')", "only the functions min, max, floor, ceil"),
        ("open('/etc/passwd')", "only the functions"),
        ("eval('1')", "only the functions"),
        ("ncpus.__class__", "attribute access is not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "only the functions"),
        ("max.__self__", "attribute access"),
        ("(lambda: 1)()", "only the functions"),
        ("lambda: 1", "lambda is not allowed"),
        ("[x for x in range(10)]", "a comprehension is not allowed"),
        ("'text'", "only numbers are allowed"),
        ("b'bytes'", "only numbers are allowed"),
        ("True + 1", "only numbers are allowed"),
        ("1j", "only numbers are allowed"),
        ("ncpus ** 2", "the operator ** is not allowed"),
        ("9 ** 9 ** 9 ** 9", "the operator ** is not allowed"),
        ("1 << 1000", "the operator << is not allowed"),
        ("ncpus > 2", "a comparison is not allowed"),
        ("ncpus if ncpus else 1", "if/else is not allowed"),
        ("ncpus and 1", "and/or is not allowed"),
        ("[ncpus][0]", "indexing is not allowed"),
        ("(n := 1)", "assignment is not allowed"),
        ("import os", "not a valid expression"),
        ("ncpus = 2", "not a valid expression"),
        ("cores - 2", "unknown name 'cores' (allowed: max_dock_mem, max_dock_swap, ncpus, ram_bytes, swap_bytes)"),
        ("__builtins__", "unknown name"),
        ("max(ncpus, key=abs)", "takes no keyword arguments"),
        ("max(*[1, 2])", "starred arguments are not allowed"),
        ("floor(1, 2)", "floor() takes 1 to 1 arguments"),
        ("max()", "max() takes 1 to 16 arguments"),
        ("ncpus / 0", "division by zero"),
        ("ncpus % (ncpus - 8)", "division by zero"),
        ("1e300 * 1e300", "value beyond"),
        ("ram_bytes * ram_bytes", "value beyond"),
        ("9" * 150, "value beyond"),
        ("1" + " + 1" * 40, f"nested deeper than {MAX_DEPTH} levels"),
        ("-" * 100 + "1", f"nested deeper than {MAX_DEPTH} levels"),
        ("(1, 2)", "a tuple is not allowed"),
        ("{}", "a mapping is not allowed"),
        ("1" * 300, "longer than 200 characters"),
        ("1\x00", "not a valid expression"),
        ("", "not a valid expression"),
    ],
)
def test_anything_but_arithmetic_is_refused(text: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as error:
        evaluate(text, NAMES)
    assert reason in str(error.value)


def test_a_refused_call_has_no_effect() -> None:
    marker = "/tmp/plancton-expression-must-not-exist"
    with pytest.raises(ExpressionError):
        evaluate(f"__import__('os').system('touch {marker}')", NAMES)
    assert not os.path.exists(marker)


@settings(max_examples=300)
@given(st.text(alphabet="ncpusram_bytemx()+-*/%.,0123456789 _[]'\"lambd:<>=!~&|^@", max_size=60))
def test_any_text_gives_a_finite_number_or_an_expression_error(text: str) -> None:
    try:
        value = evaluate(text, NAMES)
    except ExpressionError:
        return
    assert math.isfinite(value)


def _terms(depth: int) -> st.SearchStrategy[tuple[str, float, float]]:
    """Arithmetic text over small integers with its value and the largest magnitude of any step
    on the way, built alongside."""
    leaf = st.integers(0, 1000).map(lambda number: (str(number), float(number), float(number)))
    if depth == 0:
        return leaf

    def combine(
        pair: tuple[tuple[str, float, float], tuple[str, float, float]], operator: str
    ) -> tuple[str, float, float]:
        (left_text, left, left_peak), (right_text, right, right_peak) = pair
        value = {"+": left + right, "-": left - right, "*": left * right}[operator]
        return f"({left_text} {operator} {right_text})", value, max(left_peak, right_peak, abs(value))

    smaller = _terms(depth - 1)
    return leaf | st.builds(combine, st.tuples(smaller, smaller), st.sampled_from(["+", "-", "*"]))


@given(_terms(4))
def test_arithmetic_gives_the_value_of_the_expression(term: tuple[str, float, float]) -> None:
    """The value, or a clear refusal when a step on the way passes MAX_MAGNITUDE."""
    text, value, peak = term
    if peak > MAX_MAGNITUDE:
        with pytest.raises(ExpressionError, match="beyond"):
            evaluate(text, NAMES)
    else:
        assert evaluate(text, NAMES) == value

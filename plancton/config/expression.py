"""A small, safe evaluator for the arithmetic expressions allowed in the configuration.

The configuration may say ``max_docks: "max(1, ncpus - 2)"``. Such text is parsed with
:mod:`ast` and walked node by node; only numbers, the names the caller provides, the
operators ``+ - * / // %``, parentheses and the functions ``min``, ``max``, ``floor`` and
``ceil`` are accepted. Nothing ever reaches Python's ``eval``, and every intermediate value
must stay a finite number of bounded size, so no expression can exhaust time or memory.
"""

import ast
import math
import operator
from collections.abc import Callable, Mapping

from plancton.errors import ExpressionError

MAX_LENGTH = 200
MAX_DEPTH = 32
#: Any value beyond this is refused: no sensible pool size or byte count is near it.
MAX_MAGNITUDE = 1e18

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
#: How refused constructs are named in messages; others by their node type.
_REFUSED = {
    ast.Pow: "the operator **",
    ast.BitAnd: "the operator &",
    ast.BitOr: "the operator |",
    ast.BitXor: "the operator ^",
    ast.LShift: "the operator <<",
    ast.RShift: "the operator >>",
    ast.MatMult: "the operator @",
    ast.Invert: "the operator ~",
    ast.Not: "not",
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Lambda: "lambda",
    ast.Compare: "a comparison",
    ast.BoolOp: "and/or",
    ast.IfExp: "if/else",
    ast.NamedExpr: "assignment",
    ast.JoinedStr: "text",
    ast.Dict: "a mapping",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Set: "a set",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
}


def _minimum(*args: float) -> float:
    return min(args)


def _maximum(*args: float) -> float:
    return max(args)


def _floor(value: float) -> float:
    return math.floor(value)


def _ceil(value: float) -> float:
    return math.ceil(value)


FUNCTIONS: dict[str, tuple[Callable[..., float], int, int]] = {
    # name: (function, fewest arguments, most arguments)
    "min": (_minimum, 1, 16),
    "max": (_maximum, 1, 16),
    "floor": (_floor, 1, 1),
    "ceil": (_ceil, 1, 1),
}


def evaluate(text: str, names: Mapping[str, float]) -> float:
    """Given an expression and the values of the names it may use, return its value.

    Raises:
        ExpressionError: the text is not an allowed expression (a function call other than
            min/max/floor/ceil, an attribute, a string, an unknown name, nesting deeper than
            MAX_DEPTH...) or cannot be evaluated (division by zero, a value beyond
            MAX_MAGNITUDE).
    """
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"not a valid expression ({error.msg})") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("not a valid expression") from None
    try:
        return _evaluate_node(tree.body, names, depth=0)
    except ZeroDivisionError:
        raise ExpressionError("division by zero") from None
    except OverflowError:
        raise ExpressionError("value too large") from None


def _evaluate_node(node: ast.expr, names: Mapping[str, float], depth: int) -> float:
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression nested deeper than {MAX_DEPTH} levels")
    return _bounded(_node_value(node, names, depth + 1))


def _bounded(value: float) -> float:
    if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise ExpressionError(f"value beyond {MAX_MAGNITUDE:g}")
    return value


def _node_value(node: ast.expr, names: Mapping[str, float], deeper: int) -> float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"only numbers are allowed, not {node.value!r:.40}")
        # float() of a huge integer raises OverflowError, reported as "value too large"
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in names:
            allowed = ", ".join(sorted(names))
            raise ExpressionError(f"unknown name {node.id!r:.40} (allowed: {allowed})")
        return float(names[node.id])
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _evaluate_node(node.left, names, deeper)
        right = _evaluate_node(node.right, names, deeper)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate_node(node.operand, names, deeper))
    if isinstance(node, ast.Call):
        return _evaluate_call(node, names, deeper)
    raise ExpressionError(f"{_refused_name(node)} is not allowed in an expression")


def _refused_name(node: ast.expr) -> str:
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return _REFUSED.get(type(node.op), f"the operator {type(node.op).__name__}")
    return _REFUSED.get(type(node), type(node).__name__)


def _evaluate_call(node: ast.Call, names: Mapping[str, float], depth: int) -> float:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        allowed = ", ".join(FUNCTIONS)
        raise ExpressionError(f"only the functions {allowed} may be called")
    if node.keywords:
        raise ExpressionError(f"{node.func.id}() takes no keyword arguments")
    function, fewest, most = FUNCTIONS[node.func.id]
    if not fewest <= len(node.args) <= most:
        raise ExpressionError(f"{node.func.id}() takes {fewest} to {most} arguments")
    arguments = []
    for argument in node.args:
        if isinstance(argument, ast.Starred):
            raise ExpressionError("starred arguments are not allowed")
        arguments.append(_evaluate_node(argument, names, depth))
    return float(function(*arguments))

"""Mutants of one Python source file, made with `ast`: each is the file with ONE small change spliced in.

Operators (the rule is written next to each in `_expression_mutations` / `_statement_mutations`):
    binary     + <-> -, * <-> /, // -> /, ** -> *, % -> //
    compare    < <-> <=, > <-> >=, == <-> !=, is <-> is not, in <-> not in (one operator of a chain at a time)
    boolean    and <-> or; `not x` -> x; `-x` -> x
    constant   True <-> False; an int n -> n + 1; a float x -> x + 1.0
    augmented  += <-> -=, *= <-> /=
    statement  a call statement, an assignment to an attribute or subscript, raise, break or continue -> pass
    return     `return <expr>` -> `return None`

Never mutated: docstrings, annotations, decorators, f-strings, strings, `__all__`, lines ending in
`# pragma: no mutate`, the sign of `dim=-1` (dim=1 is the same axis of the 2-D tensors used here) and
`strict=True` of zip (a guard against lengths the code never produces).

Only the changed expression or statement is rewritten (byte offsets from the AST), so every other line keeps its
number, and a mutant that does not compile is dropped.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator
from dataclasses import dataclass

BINOP_SWAPS = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Pow: ast.Mult,
    ast.Mod: ast.FloorDiv,
}
COMPARE_SWAPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
AUG_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
NO_MUTATE = "# pragma: no mutate"


@dataclass(frozen=True)
class Mutant:
    """One change to one file. `key` names it stably (no line number, so edits elsewhere do not rename it)."""

    path: str  # the file, relative to the repository root
    line: int  # first line of the changed node (1-based)
    end_line: int
    qualname: str  # enclosing function/class, "<module>" at top level
    in_function: bool  # runs when a function is called (False: runs at import, e.g. a constant or a default)
    operator: str  # e.g. "Add->Sub", "const 1->2", "remove stmt"
    original: str  # the source text replaced
    replacement: str
    key: str
    source: str  # the whole mutated file


@dataclass(frozen=True)
class _Change:
    node: ast.AST
    operator: str
    replacement: str


def _name(op: ast.AST | type) -> str:
    return (op if isinstance(op, type) else type(op)).__name__


def _expression_mutations(node: ast.AST) -> Iterator[_Change]:
    if isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:  # arithmetic operator swap
        new_op = BINOP_SWAPS[type(node.op)]
        yield _Change(node, f"{_name(node.op)}->{new_op.__name__}", _unparse_with(node, op=new_op()))
    elif isinstance(node, ast.Compare):  # one comparison of a chain flipped to its neighbour/negation
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE_SWAPS:
                ops = list(node.ops)
                ops[i] = COMPARE_SWAPS[type(op)]()
                yield _Change(node, f"{_name(op)}->{_name(ops[i])}", _unparse_with(node, ops=ops))
    elif isinstance(node, ast.BoolOp):  # and <-> or
        new_op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield _Change(node, f"{_name(node.op)}->{_name(new_op)}", _unparse_with(node, op=new_op))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):  # drop `not` / unary minus
        yield _Change(node, f"drop {_name(node.op)}", f"({ast.unparse(node.operand)})")
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):  # True <-> False
            yield _Change(node, f"{value}->{not value}", repr(not value))
        elif isinstance(value, int):  # off by one
            yield _Change(node, f"const {value}->{value + 1}", repr(value + 1))
        elif isinstance(value, float):
            yield _Change(node, f"const {value!r}->{value + 1.0!r}", repr(value + 1.0))


def _statement_mutations(node: ast.stmt) -> Iterator[_Change]:
    if isinstance(node, ast.AugAssign) and type(node.op) in AUG_SWAPS:  # += <-> -=, *= <-> /=
        new_op = AUG_SWAPS[type(node.op)]
        yield _Change(node, f"{_name(node.op)}=->{new_op.__name__}=", ast.unparse(_copy_with(node, op=new_op())))
    removable = (
        (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call))
        or isinstance(node, ast.Raise | ast.Break | ast.Continue)
        or (isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute | ast.Subscript) for t in node.targets))
        or (isinstance(node, ast.AugAssign | ast.AnnAssign) and isinstance(node.target, ast.Attribute | ast.Subscript))
    )
    if removable:  # the statement's effect is lost
        yield _Change(node, "remove stmt", "pass")
    if isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):  # value lost
        yield _Change(node, "return None", "return None")


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _copy_with(node: ast.AST, **fields) -> ast.AST:
    new = copy.copy(node)
    for name, value in fields.items():
        setattr(new, name, value)
    return new


def _unparse_with(node: ast.AST, **fields) -> str:
    """The expression with `fields` replaced, parenthesised so it binds the same inside any larger expression."""
    return f"({ast.unparse(_copy_with(node, **fields))})"


class _Collector(ast.NodeVisitor):
    """Walks a module, skipping what is never mutated, and collects (change, qualname, in_function)."""

    def __init__(self) -> None:
        self.changes: list[tuple[_Change, str, bool]] = []
        self.scope: list[str] = []
        self.function_depth = 0

    def _add(self, changes: Iterator[_Change]) -> None:
        qualname = ".".join(self.scope) or "<module>"
        self.changes.extend((c, qualname, self.function_depth > 0) for c in changes)

    def _body(self, body: list[ast.stmt]) -> None:
        start = 1 if body and _is_docstring(body[0]) else 0
        for stmt in body[start:]:
            self.visit(stmt)

    def visit_Module(self, node: ast.Module) -> None:
        self._body(node.body)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            self.visit(base)
        self.scope.append(node.name)
        self._body(node.body)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for default in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]:
            self.visit(default)  # defaults run at import time: scope is the enclosing one
        self.scope.append(node.name)
        self.function_depth += 1
        self._body(node.body)
        self.function_depth -= 1
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.function_depth += 1
        self.visit(node.body)
        self.function_depth -= 1

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:  # the annotation is not code that runs
        self._add(_statement_mutations(node))
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def visit_Assign(self, node: ast.Assign) -> None:
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:  # annotations of parameters
        return

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:  # f-strings: messages, not logic
        return

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg == "strict":  # zip(..., strict=True) is a guard: no input the code makes trips it
            return
        # dim=-1 keeps its sign: on the 2-D tensors used here dim=1 is the same axis (an equivalent mutant by
        # construction); it still becomes -2
        if node.arg in ("dim", "axis") and isinstance(node.value, ast.UnaryOp) and isinstance(node.value.op, ast.USub):
            self.visit(node.value.operand)
            return
        self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.stmt):
            self._add(_statement_mutations(node))
        if isinstance(node, ast.expr):
            self._add(_expression_mutations(node))
        super().generic_visit(node)


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _line_offsets(data: bytes) -> list[int]:
    """Byte offset of the start of each line (index 0 = line 1); ast columns are UTF-8 byte offsets."""
    offsets = [0]
    for i, byte in enumerate(data):
        if byte == 0x0A:
            offsets.append(i + 1)
    return offsets


def mutants_of(path: str, text: str) -> list[Mutant]:
    """Every mutant of `text` (the file at `path`, relative to the repository root), in source order."""
    data = text.encode()
    offsets = _line_offsets(data)
    lines = text.splitlines()
    collector = _Collector()
    collector.visit(ast.parse(text))
    mutants: list[Mutant] = []
    seen: dict[str, int] = {}
    changes = sorted(collector.changes, key=lambda c: (c[0].node.lineno, c[0].node.col_offset))
    for change, qualname, in_function in changes:
        node = change.node
        if any(NO_MUTATE in lines[i - 1] for i in range(node.lineno, node.end_lineno + 1)):
            continue
        start = offsets[node.lineno - 1] + node.col_offset
        end = offsets[node.end_lineno - 1] + node.end_col_offset
        original = data[start:end].decode()
        new_data = data[:start] + change.replacement.encode() + data[end:]
        if new_data == data:
            continue
        source = new_data.decode()
        try:
            compile(source, path, "exec")
        except SyntaxError:
            continue
        line_text = " ".join(lines[node.lineno - 1].split())
        base = f"{path}::{qualname}::{line_text}::{change.operator}"
        if node.end_lineno == node.lineno and original != line_text:
            base += f"::{' '.join(original.split())}"
        seen[base] = seen.get(base, 0) + 1
        key = base if seen[base] == 1 else f"{base}#{seen[base]}"
        mutants.append(
            Mutant(
                path=path,
                line=node.lineno,
                end_line=node.end_lineno,
                qualname=qualname,
                in_function=in_function,
                operator=change.operator,
                original=original,
                replacement=change.replacement,
                key=key,
                source=source,
            )
        )
    return mutants

"""``code_quality`` of a model file, a number in [0, 1], measured on its source alone (Python's ``ast``;
nothing is imported or run).

LEMUR 2.2.11's ``CodeEval`` scores pylint's messages: 100, minus 5 per error, 2 per warning, 1 per
convention or refactor message and 1 per function of cyclomatic complexity above 10, clipped at 0,
divided by 100 (and gives 0 when pylint is missing, which it is here). This is the same formula over
checks made with ``ast``, each named by the pylint message it stands for:

* errors (-5): ``E0001`` the code does not parse (the score is then 0); ``contract`` a missing part of
  LEMUR's model contract: ``supported_hyperparameters()``, class ``Net`` and its ``__init__``,
  ``forward``, ``train_setup``, ``learn``;
* warnings (-2): ``W0611`` unused import, ``W0702`` bare ``except:``, ``W0401`` wildcard import,
  ``W0603`` ``global``, ``W0102`` mutable default argument, ``W0122``/``W0123`` ``exec``/``eval``,
  ``W0101`` unreachable code after ``return``/``raise``, ``W0301`` a statement ending with ``;``;
* conventions (-1): ``C0301`` a line over 120 characters, ``C0321`` two statements on one line,
  ``C0103`` a class name not in CapWords or a function name not in snake_case;
* refactors (-1): ``R0912`` more than 12 branches, ``R0913`` more than 5 arguments (``self`` not
  counted), ``R0915`` more than 50 statements in a function;
* complexity (-1): a function whose cyclomatic complexity (McCabe: 1 + decision points) exceeds 10.

Docstring messages are not counted, as LEMUR disables them (``C0114``-``C0116``).
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass

MAX_LINE = 120
PENALTY = {"error": 5, "warning": 2, "convention": 1, "refactor": 1, "complexity": 1}
CONTRACT_METHODS = ("__init__", "forward", "train_setup", "learn")
_CAP_WORDS = re.compile(r"^_?[A-Z][A-Za-z0-9]*$")
_SNAKE = re.compile(r"^_{0,2}[a-z][a-z0-9_]*_{0,2}$")


@dataclass(frozen=True)
class Issue:
    kind: str      # error, warning, convention, refactor, complexity
    code: str      # the pylint message it stands for
    line: int
    message: str


def issues(code: str) -> list[Issue]:
    """Every issue found in ``code``; a syntax error is the only issue of code that does not parse."""
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        return [Issue("error", "E0001", error.lineno or 0, f"syntax error: {error.msg}")]
    found = _contract(tree) + _imports(tree) + _lines(code, tree)
    for node in ast.walk(tree):
        found += _node(node)
    return sorted(found, key=lambda i: (i.line, i.code))


def score(code: str) -> float:
    """``max(0, 100 - penalties) / 100``; 0 for code that does not parse."""
    found = issues(code)
    if any(i.code == "E0001" for i in found):
        return 0.0
    return max(0, 100 - sum(PENALTY[i.kind] for i in found)) / 100


def _contract(tree: ast.Module) -> list[Issue]:
    top = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    found = []
    if not isinstance(top.get("supported_hyperparameters"), ast.FunctionDef):
        found.append(Issue("error", "contract", 1, "no module-level supported_hyperparameters()"))
    net = top.get("Net")
    if not isinstance(net, ast.ClassDef):
        return found + [Issue("error", "contract", 1, "no class Net")]
    methods = {n.name for n in net.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found += [Issue("error", "contract", net.lineno, f"Net has no {m}()") for m in CONTRACT_METHODS if m not in methods]
    return found


def _imports(tree: ast.Module) -> list[Issue]:
    imported: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported[alias.asname or alias.name.split(".")[0]] = node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                if alias.name != "*":
                    imported[alias.asname or alias.name] = node.lineno
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    exported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            exported |= {e.value for e in ast.walk(node.value)
                         if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return [Issue("warning", "W0611", line, f"unused import {name}") for name, line in imported.items()
            if name not in used and name not in exported]


def _lines(code: str, tree: ast.Module) -> list[Issue]:
    found = [Issue("convention", "C0301", i, f"line of {len(line)} characters (over {MAX_LINE})")
             for i, line in enumerate(code.splitlines(), 1) if len(line) > MAX_LINE]
    statements: dict[int, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            statements[node.lineno] = statements.get(node.lineno, 0) + 1
    for line, count in statements.items():
        if count > 1:  # "if x: y" counts as two, as in pylint
            found.append(Issue("convention", "C0321", line, "more than one statement on a line"))
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(code).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL)]
    for token, following in zip(tokens, tokens[1:]):
        if token.type == tokenize.OP and token.string == ";" and following.type in (tokenize.NEWLINE,
                                                                                     tokenize.ENDMARKER):
            found.append(Issue("warning", "W0301", token.start[0], "unnecessary semicolon"))
    return found


def _node(node: ast.AST) -> list[Issue]:
    found = []
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.ExceptHandler) and node.type is None:
        found.append(Issue("warning", "W0702", line, "bare except:"))
    elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
        found.append(Issue("warning", "W0401", line, f"wildcard import from {node.module}"))
    elif isinstance(node, ast.Global):
        found.append(Issue("warning", "W0603", line, "global statement"))
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval"):
        found.append(Issue("warning", "W0122" if node.func.id == "exec" else "W0123", line, f"{node.func.id}() used"))
    elif isinstance(node, ast.ClassDef) and not _CAP_WORDS.match(node.name):
        found.append(Issue("convention", "C0103", line, f"class name {node.name} is not CapWords"))
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        found += _function(node)
    if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.If, ast.For, ast.While, ast.With,
                         ast.Try)):
        found += _unreachable(node)
    return found


def _function(node) -> list[Issue]:
    found = []
    line = node.lineno
    if not _SNAKE.match(node.name):
        found.append(Issue("convention", "C0103", line, f"function name {node.name} is not snake_case"))
    defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
    if any(isinstance(d, (ast.List, ast.Dict, ast.Set)) for d in defaults):
        found.append(Issue("warning", "W0102", line, f"{node.name}() has a mutable default argument"))
    arguments = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
    if len([a for a in arguments if a not in ("self", "cls")]) > 5:
        found.append(Issue("refactor", "R0913", line, f"{node.name}() has more than 5 arguments"))
    body = [n for n in ast.walk(node) if n is not node]
    branches = sum(isinstance(n, (ast.If, ast.For, ast.While, ast.Try, ast.With)) for n in body)
    if branches > 12:
        found.append(Issue("refactor", "R0912", line, f"{node.name}() has {branches} branches (over 12)"))
    statements = sum(isinstance(n, ast.stmt) for n in body)
    if statements > 50:
        found.append(Issue("refactor", "R0915", line, f"{node.name}() has {statements} statements (over 50)"))
    complexity = cyclomatic_complexity(node)
    if complexity > 10:
        found.append(Issue("complexity", "C901", line, f"{node.name}() has cyclomatic complexity {complexity}"))
    return found


def cyclomatic_complexity(node) -> int:
    """McCabe's number of a function: 1 + its decision points (nested functions counted apart)."""
    points = 0
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(child, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.ExceptHandler, ast.IfExp, ast.Assert)):
            points += 1
        elif isinstance(child, ast.BoolOp):
            points += len(child.values) - 1
        elif isinstance(child, ast.comprehension):
            points += 1 + len(child.ifs)
        elif isinstance(child, ast.match_case):
            points += 1
        stack.extend(ast.iter_child_nodes(child))
    return 1 + points


def _unreachable(node) -> list[Issue]:
    found = []
    for field in ("body", "orelse", "finalbody"):
        block = getattr(node, field, None)
        if not isinstance(block, list):
            continue
        for i, statement in enumerate(block[:-1]):
            if isinstance(statement, (ast.Return, ast.Raise, ast.Continue, ast.Break)):
                found.append(Issue("warning", "W0101", block[i + 1].lineno, "unreachable code"))
                break
    return found

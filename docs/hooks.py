"""MkDocs hooks: the pages written from the code, so they cannot drift from it, and the repository files the
pages link to.

- `<!-- generated: cli -->` becomes the help of `timestep` and of each of its commands, from the parser itself;
- `<!-- generated: environment -->` becomes the table of every environment variable, from the docstrings of the
  fields of `timestep.settings.Settings` (and of the NATS and model-retry settings it holds), each written
  `NAME (default: VALUE): meaning`;
- `<!-- generated: subjects -->` becomes the table of every subject, from `subjects/asyncapi.json` (itself written
  from the msgspec types, and checked against them by tests/test_asyncapi.py);
- the repository's own READMEs, changelog and benchmark results that the pages link to are added to the site at
  their paths in the repository; a link of theirs to a file the site does not hold becomes the file's path in code.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Repository files (or folders of them) the pages link to, added to the site at the same paths.
INCLUDED = (
    "CHANGELOG.md", "subjects/README.md", "subjects/contract.schema.json", "subjects/asyncapi.json", "deploy/README.md",
    "clients/typescript/README.md", "clients/typescript-runtime/README.md", "bench/results",
)
_ADDED: set[str] = set()
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for name in INCLUDED:
        path = ROOT / name
        for one in sorted(path.rglob("*") if path.is_dir() else [path]):
            if one.is_file() and one.suffix in (".md", ".png", ".svg", ".json"):
                uri = one.relative_to(ROOT).as_posix()
                if files.get_file_from_path(uri) is None:
                    files.append(File.generated(config, uri, abs_src_path=str(one)))
                    _ADDED.add(uri)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = markdown.replace("<!-- generated: cli -->", _cli())
    markdown = markdown.replace("<!-- generated: subjects -->", _subjects())
    markdown = markdown.replace("<!-- generated: api -->", _api())
    markdown = markdown.replace("<!-- generated: environment -->", environment())
    markdown = markdown.replace("<!-- generated: readme -->", _readme())
    if page.file.src_uri in _ADDED:
        markdown = _unlink_missing(markdown, page.file.src_uri, files)
    return markdown


def _unlink_missing(markdown: str, src_uri: str, files: Any) -> str:
    """In a file added from the repository: a relative link to a file the site does not hold becomes its path."""
    here = Path(src_uri).parent

    def fix(match: re.Match) -> str:
        bang, text, target = match.groups()
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        path = target.split("#", 1)[0]
        resolved = os.path.normpath(here / path).replace(os.sep, "/") if path else src_uri
        if files.get_file_from_path(resolved) is not None:
            return match.group(0)
        return f"{text} (`{resolved}`)" if text and text.strip("`") != resolved else f"`{resolved}`"

    return _LINK.sub(fix, markdown)


_SETTING = re.compile(r"^((?:[A-Z][A-Z0-9_]+(?:, | and )?)+) \(default: (.*?)\): (.*)$", re.S)


def environment() -> str:
    """The environment variables' table, from the settings' docstrings (in the order of `Settings`'s fields,
    the NATS and model-retry settings where `Settings` holds them, then the functions' of the module)."""
    tree = ast.parse((ROOT / "timestep" / "settings.py").read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    nested = {"nats": "NatsSettings", "model_retry": "ModelRetrySettings"}

    def documented(body: list[ast.stmt]) -> list[tuple[str, str]]:
        found = []
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else None
                found.append((node.target.id, doc if isinstance(doc, str) else ""))
        return found

    docs: list[str] = []
    for name, doc in documented(classes["Settings"].body):
        docs += [d for _, d in documented(classes[nested[name]].body)] if name in nested else [doc]
    docs += [ast.get_docstring(node) or "" for node in tree.body if isinstance(node, ast.FunctionDef)]
    rows, seen = ["| variable | default | meaning |", "|---|---|---|"], set()
    for doc in docs:
        match = _SETTING.match(" ".join(doc.split()))
        if not match:
            continue
        names = re.findall(r"[A-Z][A-Z0-9_]+", match.group(1))
        if seen & set(names):
            continue
        seen |= set(names)
        meaning = match.group(3).replace("|", "\\|")
        rows.append(f"| {', '.join(f'`{n}`' for n in names)} | {match.group(2)} | {meaning} |")
    return "\n".join(rows)


def _api() -> str:
    """A mkdocstrings block for every name `timestep` exports, by the module that defines it."""
    import timestep

    by_module: dict[str, list[str]] = {}
    for name, module in sorted(timestep._EXPORTS.items(), key=lambda kv: (kv[1], kv[0].lower())):
        by_module.setdefault(module, []).append(name)
    parts = []
    for module, names in by_module.items():
        parts += [f"## `{module}`", ""]
        parts += [f"::: {module}.{name}\n" for name in names]
    return "\n".join(parts)


def _readme() -> str:
    """The repository's README as the site's home page: its links into `docs/` made relative to the site."""
    text = (ROOT / "README.md").read_text()
    return text.replace("](docs/", "](")


def _cli() -> str:
    """`timestep --help` and each command's `--help`, as the parser writes them."""
    from actors.cli.main import _parser

    os.environ["COLUMNS"] = "110"
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["```text", parser.format_help().rstrip(), "```"]
    for name, command in sub.choices.items():
        parts += ["", f"### timestep {name}", "", "```text", command.format_help().rstrip(), "```"]
    return "\n".join(parts)


def _subjects() -> str:
    """Every channel of the AsyncAPI document: its subject, who sends on it, its messages, what it is for."""
    doc = json.loads((ROOT / "subjects" / "asyncapi.json").read_text())
    senders: dict[str, list[str]] = {}
    for name, op in doc["operations"].items():
        channel = op["channel"]["$ref"].rsplit("/", 1)[1]
        senders.setdefault(channel, []).append(f"{op['action']}: {op.get('summary', name)}")
    rows = ["| subject | operations | messages | what it is for |", "|---|---|---|---|"]
    for name, channel in doc["channels"].items():
        address = f"`{channel['address']}`" if channel.get("address") else "the requester's inbox"
        messages = ", ".join(f"`{m}`" for m in channel.get("messages", {}))
        description = " ".join(channel.get("description", "").split()).replace("|", "\\|")
        rows.append(f"| {address} | {'<br>'.join(senders.get(name, [])) or '(a reply)'} | {messages} | {description} |")
    return "\n".join(rows)

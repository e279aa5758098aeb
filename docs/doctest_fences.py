"""A Griffe extension for the API reference: the `>>>` examples of a docstring become Python code blocks
(Markdown would read `>>>` as nested quotes), with the lines that follow each as its output."""

from __future__ import annotations

from typing import Any

import griffe


def fence(text: str) -> str:
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        example = line.lstrip().startswith(">>>") or (inside and line.strip() != "")
        if example and not inside:
            out.append("```python")
            inside = True
        elif not example and inside:
            out.append("```")
            inside = False
        out.append(line.strip() if example else line)
    if inside:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence(obj.docstring.value)

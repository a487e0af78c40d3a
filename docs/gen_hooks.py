"""Write ``docs/hooks.md`` from the hook specifications in ``codexlb/hookspecs.py``.

Run ``python docs/gen_hooks.py`` after changing a hook spec; ``tests/test_docs.py`` fails while
the two disagree.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codexlb import hookspecs  # noqa: E402

INTRO = """\
# Hook reference

Generated from `codexlb/hookspecs.py` by `python docs/gen_hooks.py`; edit the docstrings there.

Implement a hook by writing a method (or module function) of the same name decorated with
`codexlb.hookimpl`; accept any subset of the arguments (pluggy's opt-in arguments). Async hooks are
awaited in order by `codexlb/hooks.py`: plugins listed first in `[pipeline] plugins` are called
first; `@hookimpl(tryfirst=True)` / `trylast=True` move an implementation to the front or back.
Async hooks must not use `wrapper=True`.

Arguments common to most hooks:
- `flow` — the `codexlb.Flow` of one request (`flow.request`, `flow.account`, `flow.response`,
  `flow.stash`, ...); change it in place, call `flow.reject(status, code, message)` to answer.
- `app` — the `codexlb.AppView` of the running app: `settings`, the account `pool`, `tokens`,
  `tasks` (spawn background work), the database (`store`, `sessionmaker`), `models`, `jobs`.
"""


def _kind(fn: object) -> str:
    opts = getattr(fn, "codexlb_spec", {}) or {}
    kind = "async" if inspect.iscoroutinefunction(fn) else "sync"
    return f"*{kind} (firstresult)*" if opts.get("firstresult") else f"*{kind}*"


def _body(doc: str) -> str:
    """Docstring to Markdown: ``Example::`` blocks become fenced code, versionadded a sentence."""
    out: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "Example::":
            out.append("Example:")
            out.append("")
            out.append("```python")
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                out.append(lines[i][4:])
                i += 1
            while out[-1] == "":
                out.pop()
            out.append("```")
            out.append("")
            continue
        match = re.match(r"\.\. versionadded:: (\S+)", line.strip())
        out.append(f"Added in {match.group(1)}." if match else line)
        i += 1
    return "\n".join(out).strip() + "\n"


def render() -> str:
    """The full text of ``docs/hooks.md``."""
    parts = [INTRO]
    for name, fn in vars(hookspecs).items():
        if not hasattr(fn, "codexlb_spec"):
            continue
        args = ", ".join(inspect.signature(fn).parameters)
        parts.append(f"## `{name}({args})`\n\n{_kind(fn)}\n\n{_body(inspect.getdoc(fn) or '')}")
    return "\n".join(parts)


if __name__ == "__main__":
    (ROOT / "docs" / "hooks.md").write_text(render())

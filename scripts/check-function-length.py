#!/usr/bin/env python3
"""Fails when a function of src/ is longer than 80 lines (issue 22: "no function outside tables
and tests is over ~80 lines").

Why: a long function is a state machine or a table waiting to be named; past ~80 lines one can
no longer see what it decides. Counts the lines from `fn` to its closing brace (doc comments and
attributes not included), with strings, characters and comments blanked so their braces do not
count. Skips test code: `tests.rs` files, `tests/` directories and any item under
`#[cfg(test)]`. Run by scripts/test; `--all` lists every function over the limit, allowlisted or
not, longest first.
"""
import os
import re
import sys

LIMIT = 80
ROOTS = sys.argv[1:2] if len(sys.argv) > 1 and sys.argv[1] != "--all" else ["src"]

# Functions allowed past the limit, as "path::name": true tables only, each with why.
ALLOWLIST: set[str] = set()

FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")
CFG_TEST = re.compile(r"#\[cfg\((?:all\()?test\b")


def blank(text):
    """The text with the contents of comments, strings and character literals replaced by
    spaces (newlines kept, so offsets and line numbers stay those of the file)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:i + 300])) and not re.match(r"\w", text[i - 1:i] or " "):
            close = '"' + m.group(1)
            end = text.find(close, i + m.end())
            end = n if end < 0 else end + len(close)
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12])):
            out.append(" " * m.end())
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(code, start):
    """The offset just past the item starting at `start`: its `{ … }` block, or its `;`."""
    depth = 0
    for k in range(start, len(code)):
        ch = code[k]
        if ch == ";" and depth == 0:
            return k + 1, False
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return k + 1, True
    return len(code), False


def long_functions(path):
    with open(path, encoding="utf-8") as f:
        code = blank(f.read())
    skipped = [(m.start(), block_end(code, m.end())[0]) for m in CFG_TEST.finditer(code)]
    found = []
    for m in FN.finditer(code):
        if any(a <= m.start() < b for a, b in skipped):
            continue
        end, has_body = block_end(code, m.end())
        if not has_body:
            continue
        first = code.count("\n", 0, m.start()) + 1
        last = code.count("\n", 0, end - 1) + 1
        found.append((last - first + 1, path, first, m.group(1)))
    return found


def main():
    show_all = "--all" in sys.argv
    found = []
    for root in ROOTS:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "tests")
            for name in sorted(files):
                if name.endswith(".rs") and name != "tests.rs":
                    found += long_functions(os.path.join(folder, name))
    over = sorted((f for f in found if f[0] > LIMIT), reverse=True)
    failing = [f for f in over if f"{f[1]}::{f[3]}" not in ALLOWLIST]
    for length, path, line, name in over if show_all else failing:
        print(f"{length:4d} lines: {path}:{line} fn {name}")
    # A stale entry is only reported: a function shortened on another branch must not fail the
    # merge; the entry is removed by whoever sees the note.
    stale = ALLOWLIST - {f"{f[1]}::{f[3]}" for f in over}
    for entry in sorted(stale):
        print(f"note: allowlisted but no longer over {LIMIT} lines (remove it): {entry}")
    if failing:
        print(f"functions over {LIMIT} lines: split them (one job each) or, for a true table, "
              "allowlist them in scripts/check-function-length.py with why", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

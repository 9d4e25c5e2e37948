#!/usr/bin/env python3
"""The README's Layout section names every source file, so the map cannot drift from the tree.

The section is a list of bullets, each about one directory or file (`src/web/` — ...). A source
file counts as named when a bullet about one of its directories mentions it in backticks by its
path below that directory (`ws/outbox.rs`) or by its name (`outbox.rs`), or, for a `mod.rs`, when
its directory has a bullet or is mentioned (`ws/`). Unit-test modules (`tests.rs`, files under a
`tests/` directory) belong to the module they test and are not listed. Backticked paths that no
longer exist are reported too. Exits non-zero on any finding.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = {"src": (".rs",), "static": (".js", ".html", ".css")}


def layout_bullets():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Layout\n(.*?)(?=^## )", text, re.S | re.M)
    if not match:
        sys.exit("README.md has no '## Layout' section")
    bullets = re.split(r"^- ", match.group(1), flags=re.M)[1:]
    for bullet in bullets:
        tokens = re.findall(r"`([^`]+)`", bullet)
        if not tokens:
            continue
        head = tokens[0]
        # The head names the bullet's subject: a directory (`src/web/`) or a file (`src/server.rs`).
        base = head if head.endswith("/") else str(pathlib.PurePosixPath(head).parent) + "/"
        words = set()
        for token in tokens:
            words.update(w for w in re.split(r"[\s,(){}]+", token) if w)
        yield head, base, words


def source_files():
    for top, exts in SOURCES.items():
        for path in sorted((ROOT / top).rglob("*")):
            rel = path.relative_to(ROOT)
            if not path.is_file() or path.suffix not in exts:
                continue
            if rel.name == "tests.rs" or "tests" in rel.parts[1:-1] or "vendor" in rel.parts:
                continue
            yield rel.as_posix()


def spellings(word: str, base: str):
    """The paths a backticked word can mean: as written, below the bullet's directory, below a top."""
    return {word, base + word, *(top + "/" + word for top in SOURCES)}


def named(path: str, bullets) -> bool:
    for head, base, words in bullets:
        if head == path or any(path in spellings(word, base) for word in words):
            return True
        if not path.startswith(base):
            continue
        below = path[len(base):]
        name = below.rsplit("/", 1)[-1]
        if name in words:
            return True
        if name == "mod.rs":
            directory = below[: -len("mod.rs")]
            if directory == "" or directory in words:
                return True
    return False


def main() -> int:
    bullets = list(layout_bullets())
    findings = [f"README Layout does not name {p}" for p in source_files() if not named(p, bullets)]
    for head, base, words in bullets:
        for word in words:
            if re.fullmatch(r"[\w./-]+\.(rs|js|css|html)", word) and "/" in word:
                if not any((ROOT / c).exists() for c in spellings(word, base)):
                    findings.append(f"README Layout names {word} (under {base}), which does not exist")
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

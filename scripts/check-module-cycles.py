#!/usr/bin/env python3
"""Fails when a module of src/ imports one that imports it back (directly or through others).

Reads every `crate::…` and `super::…` path outside `#[cfg(test)]` code, maps it to the module it
names, and looks for cycles among the top-level modules and for two-module cycles at any depth
(a module and its own submodules may use each other). Run by scripts/test; prints the module
graph with --graph.
"""
import collections
import os
import re
import sys

def modules(root):
    found = {}
    for folder, _, files in os.walk(root):
        if folder.startswith(os.path.join(root, "bin")):
            continue
        for name in files:
            if not name.endswith(".rs") or name == "tests.rs":
                continue
            path = os.path.join(folder, name)
            module = path[len(root) + 1:-3].replace("/mod", "").replace("/", "::")
            if module in ("lib", "main") or module.endswith("::tests"):
                continue
            with open(path, encoding="utf-8") as f:
                found[module] = f.read().split("#[cfg(test)]")[0]
    return found

def edges(found):
    graph = collections.defaultdict(set)
    for module, text in found.items():
        for path in re.findall(r"(?:crate|super)::[a-z_:]+", text):
            parts = path.split("::")
            parts = module.split("::")[:-1] + parts[1:] if parts[0] == "super" else parts[1:]
            for k in range(len(parts), 0, -1):
                target = "::".join(parts[:k])
                if target in found:
                    nested = module.startswith(target + "::") or target.startswith(module + "::")
                    if target != module and not nested:
                        graph[module].add(target)
                    break
    return graph

def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))
    for v in list(graph):
        if v not in index:
            visit(v)
    return out

def main():
    found = modules("src")
    graph = edges(found)
    top = collections.defaultdict(set)
    for a, targets in graph.items():
        for b in targets:
            if a.split("::")[0] != b.split("::")[0]:
                top[a.split("::")[0]].add(b.split("::")[0])
    if "--graph" in sys.argv:
        for module in sorted(top):
            print(module, "->", ", ".join(sorted(top[module])))
    problems = [" <-> ".join(c) for c in cycles(top)]
    problems += [f"{a} <-> {b}" for a in sorted(graph) for b in sorted(graph[a])
                 if a < b and a in graph.get(b, ())]
    for problem in problems:
        print("import cycle:", problem)
    sys.exit(1 if problems else 0)

if __name__ == "__main__":
    main()

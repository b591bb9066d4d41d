#!/usr/bin/env python3
"""Import cycles between nightshift's source files.

Reads every `use crate::…` (and `crate::…` paths written inline) in src/, maps each to the file
that defines the module it names, and prints the strongly connected components of that graph
with more than one file: groups of files that import each other in a circle. A module's own
children (`mod x;`) and `super::` paths are not imports across files of different modules and
are ignored. Exit status 1 when a cycle exists.

    python3 scripts/import-cycles.py [--folders]

With --folders, the same for the top-level modules (stage folders and infrastructure).
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_files():
    files = {}
    for dirpath, _, names in os.walk(ROOT):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.relpath(os.path.join(dirpath, name), ROOT)
            parts = path[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                continue
            files["::".join(parts)] = path
    return files


def strip_tests(text):
    # Test modules may import anything; cut from `#[cfg(test)]` followed by `mod`.
    match = re.search(r"#\[cfg\(test\)\]\s*(#\[path[^\]]*\]\s*)?mod ", text)
    return text[: match.start()] if match else text


def main():
    folders = "--folders" in sys.argv
    files = module_files()
    edges = {}
    for module, path in files.items():
        if path.endswith("tests.rs") or path.endswith("_tests.rs"):
            continue
        text = strip_tests(open(os.path.join(ROOT, path), encoding="utf-8").read())
        # Comments (and doc comments) name modules without importing them.
        text = re.sub(r"//[^\n]*", "", text)
        source = module.split("::")[0] if folders else module
        for found in re.finditer(r"crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
            parts = found.group(1).split("::")
            # The longest prefix that is a module file.
            target = None
            for n in range(len(parts), 0, -1):
                if "::".join(parts[:n]) in files:
                    target = "::".join(parts[:n])
                    break
            if target is None:
                continue
            if folders:
                target = target.split("::")[0]
            if target != source:
                edges.setdefault(source, set()).add(target)
    # Tarjan's strongly connected components.
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    for comp in comps:
        print(f"cycle of {len(comp)}: " + ", ".join(comp))
        for v in comp:
            inside = sorted(w for w in edges.get(v, ()) if w in comp)
            print(f"  {v} -> {', '.join(inside)}")
    if not comps:
        print("no import cycles")
    return 1 if comps else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""No circle among the modules of any host crate.

For each crate under host/ (host/src and host/*/src), every top-level module
(a file `src/x.rs` or a folder `src/x/`, children included) is a node, and a
path to `crate::y` (or `super::y` from a top-level file) written in module x
is an arrow x -> y. Prints each circle (a strongly connected set of two or
more modules) and exits 1 if there is one. `make lint` runs it.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def crates():
    yield ROOT / "host" / "src"
    for manifest in sorted((ROOT / "host").glob("*/Cargo.toml")):
        src = manifest.parent / "src"
        if src.is_dir():
            yield src


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def arrows(src):
    modules = {p.stem for p in src.glob("*.rs")} | {p.name for p in src.iterdir() if p.is_dir()}
    modules -= {"lib", "main"}
    graph = {m: set() for m in modules}
    for file in src.rglob("*.rs"):
        top = file.relative_to(src).parts[0].removesuffix(".rs")
        if top not in graph:
            continue  # the crate root may name every module
        text = strip_comments(file.read_text())
        top_level_file = file.parent == src
        for name in re.findall(r"\bcrate::(\w+)", text):
            if name in modules and name != top:
                graph[top].add(name)
        # `use crate::{a, b::c}`: each name in the braces.
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            for name in re.findall(r"(?:^|[,{\s])(\w+)", group):
                if name in modules and name != top:
                    graph[top].add(name)
        if top_level_file:
            for name in re.findall(r"\bsuper::(\w+)", text):
                if name in modules and name != top:
                    graph[top].add(name)
    return graph


def circles(graph):
    """Tarjan's strongly connected components of two or more nodes."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main():
    failed = False
    checked = 0
    for src in crates():
        graph = arrows(src)
        checked += len(graph)
        for circle in circles(graph):
            failed = True
            crate = src.parent.relative_to(ROOT)
            print(f"{crate}: a circle among modules {', '.join(circle)}")
    if not failed:
        print(f"module circles: none among the {checked} modules of the host crates")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

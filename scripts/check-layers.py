#!/usr/bin/env python3
"""Checks the import direction of spa-dat's modules (the layers in spa-dat/src/lib.rs).

Every `use` and every `crate::`/`super::`/`self::` path in spa-dat/src is resolved to the module
it names. The check fails when
- a module imports a module its layer may not import (LAYERS below, the table of lib.rs's docs),
- files import each other in a circle (a folder's mod.rs declaring and re-exporting its own
  files is not an import of theirs).

Run: scripts/check-layers.py [path/to/spa-dat/src]   (exit 1 with every violation listed)
"""
import os
import re
import sys

# Each top-level module and the modules it may import (besides itself). Bottom to top.
LAYERS = {
    # foundation
    "error": [],
    "redact": [],
    "topic": [],
    "url": ["error", "redact"],
    # the envelope and the metric handles
    "message": ["error", "topic"],
    "metrics": ["error", "topic"],
    # transports and the transport author's interface
    "socket": ["error", "redact", "topic", "url", "message", "metrics"],
    # settings that build transports; spans over what transports deliver
    "config": ["error", "redact", "topic", "url", "socket"],
    "telemetry": ["error", "message", "socket"],
    # the runtime floor
    "runtime": ["error", "topic", "message", "metrics", "socket", "telemetry"],
    # what handlers take and return
    "handler": ["error", "message", "socket", "runtime"],
    # life cycle, delivery engine, health
    "app": ["error", "topic", "url", "message", "metrics", "socket", "config", "telemetry",
            "runtime", "handler"],
    # the macros' hidden path
    "__private": ["runtime", "handler"],
}
# Inside app/: the engine and health never reach up into the life cycle, nor into each other.
APP_PARTS = {
    "engine": ["engine"],
    "health": ["health"],
}
APP_LIFECYCLE = {"application", "distributed", "placeholders", "resource"}


def module_of(path, root):
    """The module path of a file: src/a/b.rs -> [a, b]; src/a/mod.rs -> [a]; lib.rs -> []."""
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def use_paths(tree):
    """Flattens a use tree (`a::{b, c::{d, e}}`) into its paths."""
    tree = tree.strip()
    if "{" not in tree:
        return [tree.split(" as ")[0].strip()]
    head, body = tree[: tree.index("{")], tree[tree.index("{") + 1: tree.rindex("}")]
    parts, depth, current = [], 0, ""
    for ch in body:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for part in parts if part.strip() for p in use_paths(head + part.strip())]


def inline_modules(source):
    """Splits `source` into its own text and the bodies of its inline modules (`mod x { .. }`)."""
    outer, inner, at = "", [], 0
    for match in re.finditer(r"\bmod\s+(\w+)\s*\{", source):
        if match.start() < at:
            continue  # nested in a module already taken
        depth, end = 1, match.end()
        while depth and end < len(source):
            depth += source[end] == "{"
            depth -= source[end] == "}"
            end += 1
        outer += source[at:match.start()]
        inner.append((match.group(1), source[match.end():end - 1]))
        at = end
    return outer + source[at:], inner


def paths_in(source, here):
    """The modules the paths of `source`, written in module `here`, name."""
    source, inline = inline_modules(source)
    targets = set()
    for name, body in inline:
        targets |= paths_in(body, here + [name])
    paths = set()
    for match in re.finditer(r"\buse\s+([^;]+);", source):
        paths.update(use_paths(" ".join(match.group(1).split())))
    paths.update(re.findall(r"\b(?:crate|super|self)(?:::\w+)+", source))
    # `use child::Item` names a module this file declares (`mod child;`).
    children = set(re.findall(r"\bmod\s+(\w+)\s*;", source))
    for p in paths:
        segments = [s for s in p.replace(" ", "").split("::") if s]
        if not segments:
            continue
        if segments[0] in children:
            targets.add(tuple(here + segments))
        elif segments[0] == "crate":
            targets.add(tuple(segments[1:]))
        elif segments[0] in ("super", "self"):
            base = here[:]
            k = 0
            while k < len(segments) and segments[k] in ("super", "self"):
                if segments[k] == "super":
                    base = base[:-1]
                k += 1
            targets.add(tuple(base + segments[k:]))
    return targets


def imports_of(path, root):
    source = open(path, encoding="utf-8").read()
    source = re.sub(r"//[^\n]*", "", source)
    source = re.sub(r'"(?:\\.|[^"\\])*"', '""', source)
    # Unit tests may reach anywhere of their module.
    while (test := re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", source)):
        depth, end = 1, test.end()
        while depth and end < len(source):
            depth += source[end] == "{"
            depth -= source[end] == "}"
            end += 1
        source = source[:test.start()] + source[end:]
    here = module_of(path, root)
    return here, paths_in(source, here)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "spa-dat", "src")
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                files[tuple(module_of(path, root))] = path
    problems = []
    graph = {}
    for module, path in sorted(files.items()):
        _, targets = imports_of(path, root)
        edges = set()
        for target in targets:
            # The file that defines the target: its longest prefix that is a file module.
            prefix = next((target[:n] for n in range(len(target), -1, -1) if target[:n] in files), None)
            if prefix is None or prefix == module:
                continue
            edges.add(prefix)
            if not module or not prefix:
                continue  # the crate root may import anything; items of the root are re-exports
            top, target_top = module[0], prefix[0]
            if top not in LAYERS:
                problems.append(f"{path}: module `{top}` is not in the layer table of scripts/check-layers.py")
                continue
            if target_top != top and target_top not in LAYERS[top]:
                problems.append(f"{path}: `{'::'.join(module)}` imports `{'::'.join(prefix)}` — "
                                f"`{top}` may import only {LAYERS[top] or 'nothing of the crate'}")
            if top == "app" and target_top == "app" and len(module) > 1 and len(prefix) > 1:
                part, target_part = module[1], prefix[1]
                if part in APP_PARTS and target_part != part and (
                        target_part in APP_LIFECYCLE or target_part in APP_PARTS):
                    problems.append(f"{path}: `app::{part}` imports `{'::'.join(prefix)}` — the "
                                    f"engine and health never import the life cycle or each other")
        # A folder's mod.rs declares and re-exports its children: not an import of theirs.
        graph[module] = {e for e in edges if not (e[:len(module)] == module and len(e) > len(module))}
    # Circles: strongly connected components (Tarjan) spanning more than one folder.
    index, low, stack, on_stack, counter = {}, {}, [], set(), [0]
    components = []

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(component)

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    for component in components:
        if len(component) > 1:
            names = sorted("::".join(m) or "lib" for m in component)
            problems.append(f"an import circle: {', '.join(names)}")
    if problems:
        print("check-layers: imports against the layers of spa-dat/src/lib.rs:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        sys.exit(1)
    print(f"check-layers: {len(files)} files, imports follow the layers, no import circle")


if __name__ == "__main__":
    main()

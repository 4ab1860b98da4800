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
    "telemetry": ["error", "topic", "message", "socket"],
    # the runtime floor
    "runtime": ["error", "topic", "message", "metrics", "socket", "telemetry"],
    # what handlers take and return
    "handler": ["error", "message", "socket", "runtime"],
    # life cycle, delivery engine, health
    "app": ["error", "topic", "url", "message", "metrics", "socket", "config", "telemetry",
            "runtime", "handler"],
    # running an application inside a test
    "testing": ["error", "topic", "message", "socket", "runtime", "app"],
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


def code_only(source):
    """`source` with comments, strings and char literals blanked (a `//` or a quote inside a
    string, or `'"'`, must not hide or invent code)."""
    out, i, n = [], 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("//", i):
            while i < n and source[i] != "\n":
                i += 1
        elif source.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if source.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif source.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif (raw := re.match(r'b?r(#*)"', source[i:])) and (i == 0 or not (source[i - 1].isalnum() or source[i - 1] == "_")):
            end = source.find('"' + raw.group(1), i + raw.end())
            i = n if end < 0 else end + 1 + len(raw.group(1))
            out.append('""')
        elif c == '"' or (c == "b" and source.startswith('b"', i)):
            i += 2 if c == "b" else 1
            while i < n and source[i] != '"':
                i += 2 if source[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and (char := re.match(r"'(?:\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'", source[i:])):
            i += char.end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


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


def resolve(path, here, children):
    """The module path a path written in module `here` names (None for an outside crate)."""
    segments = [s for s in path.replace(" ", "").split("::") if s]
    if not segments:
        return None
    if segments[0] in children:
        return tuple(here + segments)
    if segments[0] == "crate":
        return tuple(segments[1:])
    if segments[0] in ("super", "self"):
        base = here[:]
        k = 0
        while k < len(segments) and segments[k] in ("super", "self"):
            if segments[k] == "super":
                base = base[:-1]
            k += 1
        return tuple(base + segments[k:])
    return None


def paths_in(source, here, names):
    """The modules the paths of `source`, written in module `here`, name; fills `names` with
    what the file's own `use` items bring in (name -> module path), to follow re-exports."""
    source, inline = inline_modules(source)
    targets = set()
    for name, body in inline:
        targets |= paths_in(body, here + [name], {})
    children = set(re.findall(r"\bmod\s+(\w+)\s*;", source))
    for match in re.finditer(r"\buse\s+([^;]+);", source):
        for path in use_paths(" ".join(match.group(1).split())):
            target = resolve(path.split(" as ")[0], here, children)
            if target is None:
                continue
            targets.add(target)
            alias = path.split(" as ")[1].strip() if " as " in path else target[-1] if target else ""
            if alias not in ("*", "self", "_"):
                names[alias] = target
    for path in re.findall(r"\b(?:crate|super|self)(?:::\w+)+", source):
        target = resolve(path, here, children)
        if target is not None:
            targets.add(target)
    return targets


def imports_of(path, root, names):
    source = open(path, encoding="utf-8").read()
    source = code_only(source)
    # Unit tests may reach anywhere of their module.
    while (test := re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", source)):
        depth, end = 1, test.end()
        while depth and end < len(source):
            depth += source[end] == "{"
            depth -= source[end] == "}"
            end += 1
        source = source[:test.start()] + source[end:]
    here = module_of(path, root)
    return here, paths_in(source, here, names)


def defining_file(target, files, reexports):
    """The file that defines what `target` names, following `use` re-exports."""
    for _ in range(20):
        prefix = next((target[:n] for n in range(len(target), -1, -1) if target[:n] in files), None)
        if prefix is None or len(target) == len(prefix):
            return prefix
        through = reexports.get(prefix, {}).get(target[len(prefix)])
        if through is None or through == target[:len(prefix) + 1]:
            return prefix
        target = through + target[len(prefix) + 1:]
    return prefix


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
    reexports, imports = {}, {}
    for module, path in files.items():
        names = {}
        imports[module] = imports_of(path, root, names)[1]
        reexports[module] = names
    for module, path in sorted(files.items()):
        targets = imports[module]
        edges = set()
        for target in targets:
            # The file that defines the target, through the re-exports on the way.
            prefix = defining_file(target, files, reexports)
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

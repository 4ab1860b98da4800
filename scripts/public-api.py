#!/usr/bin/env python3
"""spa-dat's public API as a text snapshot (spa-dat/public-api.txt), checked by the test command.

The surface is read from rustdoc's own output (so re-exports are resolved, `#[doc(hidden)]` is
left out, and signatures are as a user sees them): every item rustdoc lists in all.html with
its declaration, and on its page every impl block and member (inherent, trait and auto-trait
implementations; blanket implementations left out). Every change of the public surface is then
a visible diff of public-api.txt in review.

  scripts/public-api.py check   # fails with a diff when the surface differs from the snapshot
  scripts/public-api.py bless   # writes the snapshot (after an intended change)
"""
import difflib
import html
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SNAPSHOT = os.path.join(ROOT, "spa-dat", "public-api.txt")


def text_of(fragment):
    """Rustdoc HTML to one line of plain Rust."""
    fragment = re.sub(r"<span class=\"where[^\"]*\">", " ", fragment)
    fragment = re.sub(r"<br>|<br/>", " ", fragment)
    fragment = re.sub(r"<[^>]+>", "", fragment)
    return " ".join(html.unescape(fragment).split())


def surface(doc_dir):
    index = open(os.path.join(doc_dir, "all.html"), encoding="utf-8").read()
    pages = sorted(set(re.findall(r'<li><a href="([^"#]+\.html)">', index)))
    lines = []
    # Re-exports rustdoc does not inline (an item whose own module is public too) are listed
    # on their module's page only: a second path to a type shows up here.
    for folder, _, names in sorted(os.walk(doc_dir)):
        if "index.html" not in names:
            continue
        source = open(os.path.join(folder, "index.html"), encoding="utf-8").read()
        module = "::".join(["spa_dat"] + [p for p in os.path.relpath(folder, doc_dir).split(os.sep)
                                           if p != "."])
        section = source.split('id="reexports"', 1)
        if len(section) == 2:
            for reexport in re.findall(r"<code>(.*?)</code>", section[1].split("<h2", 1)[0], re.S):
                lines.append(f"reexport {module}: {text_of(reexport)}")
    for page in pages:
        source = open(os.path.join(doc_dir, page), encoding="utf-8").read()
        kind, name = os.path.basename(page)[:-5].split(".", 1)
        path = "::".join(["spa_dat"] + os.path.dirname(page).split("/") + [name]).replace(
            "spa_dat::::", "spa_dat::")
        lines.append(f"{kind} {path}")
        for declaration in re.findall(r'<pre class="rust item-decl"><code>(.*?)</code></pre>',
                                      source, re.S):
            for part in text_of(declaration.replace("\n", "<br>")).split(" <br> "):
                lines.append(f"  {part}")
        # Members and impl blocks, in page order, up to the blanket implementations.
        source = source.split('id="blanket-implementations"')[0]
        for header in re.findall(r'<h[34] class="code-header">(.*?)</h[34]>', source, re.S):
            lines.append(f"    {text_of(header)}")
    return lines


def build_docs():
    metadata = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"],
                              cwd=ROOT, check=True, capture_output=True, text=True).stdout
    doc_dir = os.path.join(json.loads(metadata)["target_directory"], "doc", "spa_dat")
    # Pages of items that no longer exist must not be read.
    shutil.rmtree(doc_dir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "RUSTDOCFLAGS"}
    subprocess.run(["cargo", "doc", "-p", "spa-dat", "--all-features", "--no-deps", "-q"],
                   cwd=ROOT, check=True, env=env)
    return doc_dir


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "check"
    current = surface(build_docs())
    if mode == "bless":
        with open(SNAPSHOT, "w", encoding="utf-8") as out:
            out.write("# spa-dat's public API (scripts/public-api.py bless). Do not edit by hand.\n")
            out.write("\n".join(current) + "\n")
        print(f"public-api: wrote {SNAPSHOT} ({len(current)} lines)")
        return
    try:
        recorded = open(SNAPSHOT, encoding="utf-8").read().splitlines()[1:]
    except FileNotFoundError:
        recorded = []
    if recorded != current:
        sys.stdout.writelines(
            line + "\n" for line in difflib.unified_diff(
                recorded, current, "spa-dat/public-api.txt", "the code's public API", lineterm=""))
        print("public-api: the public API differs from spa-dat/public-api.txt; if intended, run "
              "scripts/public-api.py bless and commit the diff", file=sys.stderr)
        sys.exit(1)
    print(f"public-api: matches spa-dat/public-api.txt ({len(current)} lines)")


if __name__ == "__main__":
    main()

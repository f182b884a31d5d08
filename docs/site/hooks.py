"""mkdocs hooks (``hooks:`` in mkdocs.yml): pages made at build time from files that live elsewhere.

- README.md: the text before its first ``## `` heading is the home page, each ``## `` section a guide
  page (its headings raised one level). The pages sit at the site root, so the README's relative links
  (``docs/*.png``, ``notebooks/*.ipynb``) resolve as they do in the repository; the files it links to
  are served from where they are.
- notebooks/*.ipynb: served from where they are, rendered by mkdocs-jupyter (stored executed).
- griffe (mkdocstrings' static analysis) looks packages up by folder name, and this repository's root
  is the ``headscope`` package under another name: ``headscope`` is a symbolic link to the root in a
  temporary folder made for the build, the python handler's search path.
- api/index.md: the ``import headscope as hs`` names, read from the ``_API`` table of ``__init__.py``
  (parsed, not imported), each a cross-reference to its family page; a name no page documents fails
  ``mkdocs build --strict``.

In mkdocs.yml's nav, the entry ``README.md`` stands for the guide pages and ``notebooks/*.ipynb`` for
the notebooks.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{2,6}) ")
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
_GUIDE_NAV = "README.md"
_NOTEBOOK_NAV = "notebooks/*.ipynb"


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def readme_pages(readme: str) -> list[tuple[str, str, str]]:
    """(page path, title, markdown) for the README's introduction and each ``## `` section."""
    pages = [["index.md", "Home", []]]
    fenced = False
    for line in readme.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            title = line[3:].strip()
            pages.append([f"{_slug(title)}.md", title, []])
        if not fenced and len(pages) > 1 and _HEADING.match(line):
            line = line[1:]
        pages[-1][2].append(line)
    return [(path, title, "\n".join(lines).strip() + "\n") for path, title, lines in pages]


def api_table(init: str) -> dict[str, list[str]]:
    """The ``_API`` table of the package's ``__init__.py``: module -> the names ``hs`` exports from it."""
    for node in ast.parse(init).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_API" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError("__init__.py has no _API table")


@functools.lru_cache
def _module(root: Path, module: str) -> tuple[list[str], ast.Module]:
    parts = module.split(".")[1:]
    source = root.joinpath(*parts)
    package = source.is_dir()
    source = source / "__init__.py" if package else source.with_suffix(".py")
    return (parts if package else parts[:-1]), ast.parse(source.read_text("utf-8"))


def defining(root: Path, module: str, name: str) -> tuple[str, str]:
    """Where ``name``, imported from ``module``, is defined, and the first line of its docstring:
    ``from .x import name`` followed through the package's ``__init__.py`` files (read, not imported).
    A function re-exported next to a submodule of its own name (``engine.run``) is documented, and so
    cross-referenced, at this path."""
    package, tree = _module(root, module)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level and any(a.name == name and not a.asname
                                                                   for a in node.names):
            base = package[: len(package) - node.level + 1]
            target = ".".join(["headscope", *base, *(node.module.split(".") if node.module else [])])
            return defining(root, target, name)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return f"{module}.{name}", (ast.get_docstring(node) or "").split("\n\n")[0].replace("\n", " ")
    return f"{module}.{name}", ""


def api_index(root: Path, table: dict[str, list[str]]) -> str:
    lines = ["# headscope (`hs`)", "", "::: headscope", "    options:", "      show_root_heading: false",
             "      members: false", "",
             "Every name below is importable from `headscope` (`import headscope as hs; hs.NAME`); each links",
             "to its family's page.", ""]
    for module, names in table.items():
        lines += [f"## `{module}`", "", "| name | |", "|---|---|"]
        for name in names:
            path, summary = defining(root, module, name)
            lines.append(f"| [`hs.{name}`][{path}] | {summary.replace('|', '&#124;')} |")
        lines.append("")
    return "\n".join(lines)


def _expand_nav(nav, guide: list, notebooks: list):
    if isinstance(nav, list):
        out = []
        for item in nav:
            if item == _NOTEBOOK_NAV:
                out += notebooks
            elif item == _GUIDE_NAV:
                out += guide
            else:
                out.append(_expand_nav(item, guide, notebooks))
        return out
    if isinstance(nav, dict):
        return {key: _expand_nav(value, guide, notebooks) for key, value in nav.items()}
    if nav == _GUIDE_NAV:
        return guide
    if nav == _NOTEBOOK_NAV:
        return notebooks
    return nav


_links: list[str] = []


@event_priority(100)  # before mkdocstrings' on_config, which hands the handlers their configuration
def on_config(config):
    root = _root(config)
    link_dir = tempfile.mkdtemp(prefix="headscope-docs-")
    _links.append(link_dir)
    os.symlink(root, Path(link_dir, "headscope"), target_is_directory=True)
    python = config.plugins["mkdocstrings"].config.handlers.setdefault("python", {})
    python["paths"] = [link_dir]
    guide = [{title: path} for path, title, _ in readme_pages((root / "README.md").read_text("utf-8"))[1:]]
    notebooks = [p.relative_to(root).as_posix() for p in sorted(root.glob(_NOTEBOOK_NAV))]
    if config.nav is not None:
        config.nav = _expand_nav(config.nav, guide, notebooks)
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, so that it takes the notebooks added here
def on_files(files, config):
    root = _root(config)
    readme = (root / "README.md").read_text("utf-8")
    for path, _, text in readme_pages(readme):
        files.append(File.generated(config, path, content=text))
    _module.cache_clear()  # mkdocs serve: a rebuild reads the sources again
    table = api_table((root / "__init__.py").read_text("utf-8"))
    files.append(File.generated(config, "api/index.md", content=api_index(root, table)))
    linked = {m.group(1) for m in _LINK.finditer(readme) if "://" not in m.group(1)}
    for path in sorted(linked | {p.relative_to(root).as_posix() for p in root.glob(_NOTEBOOK_NAV)}):
        if (root / path).is_file() and files.get_file_from_path(path) is None:
            files.append(File(path, str(root), config.site_dir, config.use_directory_urls))
    return files


def on_shutdown():
    while _links:  # the link, then its empty folder: nothing is followed
        link_dir = Path(_links.pop())
        (link_dir / "headscope").unlink(missing_ok=True)
        link_dir.rmdir()

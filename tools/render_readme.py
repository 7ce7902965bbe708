#!/usr/bin/env python
"""Render README.md from nbs/index.ipynb (settings.ini's `readme_nb`):  `python tools/render_readme.py`

What `nbdev_readme` does, without Quarto: nbdev processes the notebook exactly as for the docs
(`_proc/index.ipynb`: `#| hide` cells gone, `show_doc` run, API names linked), then nbconvert's
MarkdownExporter writes GitHub-flavoured markdown. Figures from cell outputs are written beside
the README as `README_files/README_<cell>_<n>.png` and linked relatively; files left there from
an earlier render are removed. Quarto/pandoc-only syntax that GitHub would show literally is
turned into its GitHub form: `::: {.callout-note}` divs become `> [!NOTE]` alerts, other `:::`
fences and `{...}` attributes on links and headings are dropped, and links to notebooks
(`00_encoding.ipynb#x`) point to their pages on the docs site (settings.ini's doc_host + doc_baseurl).

Options: --check  do not write; exit 1 if README.md (or README_files/) would change.
"""
from __future__ import annotations

import argparse, re, shutil, sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_docs as bd   # noqa: E402  (shared helpers: environment, Quarto cell options, front matter)

REPO = bd.REPO
FILES_DIR = 'README_files'
_ALERTS = {'note': 'NOTE', 'tip': 'TIP', 'important': 'IMPORTANT', 'warning': 'WARNING', 'caution': 'CAUTION'}


def process_readme_nb(nb_path:Path, nbs:Path) -> Path:
    "nbdev's docs processing (`proc_nbs`'s per-file step) of just this notebook; returns `_proc/<name>`."
    import nbdev.serve_drv, warnings
    from nbdev.processors import FilterDefaults
    from nbdev.config import get_config
    dest = Path(get_config().config_path)/'_proc'/nb_path.relative_to(nbs)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Found cells containing imports')
        nbdev.serve_drv.main((nb_path, dest, FilterDefaults))
    return dest


def gfm_md(md:str, site_prefix:str, nbs:Path) -> str:
    "Pandoc/Quarto-only markdown as GitHub shows it well (outside code fences); `nbs`: where notebooks are."
    out, in_fence = [], False
    stack = []    # for each open ::: div, the line prefix inside it
    def link(m):
        text, url = m[1], m[2]
        u = urlsplit(url)
        if not (u.scheme or u.netloc) and u.path.endswith(('.ipynb', '.qmd')):
            url = site_prefix + bd.page_of(nbs/u.path, nbs) + (f'#{u.fragment}' if u.fragment else '')
        return f'[{text}]({url})'
    for line in md.splitlines():
        prefix = ''.join(stack)
        if line.lstrip().startswith(('```', '~~~')):
            in_fence = not in_fence
            out.append(prefix + line)
            continue
        if in_fence:
            out.append(prefix + line)
            continue
        if bd._re_div_close.match(line) and stack:
            stack.pop()
            out.append('')
            continue
        m = bd._re_div_open.match(line)
        if m and not bd._re_div_close.match(line):
            callout = re.search(r'\.callout-(\w+)', m[1])
            if callout:
                out.append(prefix + f'> [!{_ALERTS.get(callout[1], "NOTE")}]')
                stack.append('> ')
            else: stack.append('')
            continue
        m = bd._re_head_attrs.match(line)
        if m: line = m[1]
        line = re.sub(r'(\]\([^)\s]+\))\{[^}\n]*\}', r'\1', line)            # [text](url){target=...}
        line = re.sub(r'(?<!!)\[([^\]\n]*)\]\(([^)\s]+)\)', link, line)
        out.append((prefix + line).rstrip() if prefix else line)
    return '\n'.join(out)


def tidy(md:str) -> str:
    "Whitespace-only lines emptied and runs of blank lines collapsed to one, outside fenced code."
    out, in_fence = [], False
    for line in md.splitlines():
        if line.lstrip().startswith(('```', '~~~')): in_fence = not in_fence
        if not in_fence:
            if not line.strip():
                if out and not out[-1]: continue
                line = ''
        out.append(line)
    return '\n'.join(out).strip('\n') + '\n'


def render(check:bool=False) -> int:
    bd.setup_env()
    import nbformat
    from nbconvert import MarkdownExporter
    from nbdev.config import get_config
    cfg = get_config()
    nbs = Path(cfg.nbs_path)
    nb_path = nbs/cfg.get('readme_nb', 'index.ipynb')
    if not nb_path.exists(): sys.exit(f'no {nb_path.relative_to(REPO)}: nothing to render README.md from')
    site_prefix = bd.site_settings(nbs)['site_prefix']
    proc = process_readme_nb(nb_path, nbs)
    nb = nbformat.read(proc, as_version=4)
    fm = bd.read_frontmatter(nb)
    # Quarto cell options (echo, output, include, warning ...), and GitHub's forms of pandoc-only markdown
    nb = bd.prepare_nb(nb, md=lambda s: gfm_md(s, site_prefix, nbs))
    nb.metadata['language_info'] = {'name': 'python'}
    resources = {'output_files_dir': FILES_DIR, 'unique_key': 'README'}
    body, res = MarkdownExporter().from_notebook_node(nb, resources=resources)
    head = (f'# {fm.get("title") or cfg.lib_name}\n\n<!-- WARNING: THIS FILE WAS AUTOGENERATED! DO NOT EDIT! '
            f'(tools/render_readme.py from nbs/{nb_path.name}) -->\n')
    if fm.get('description'): head += f'\n> {fm["description"]}\n'
    body = body.replace('<!-- WARNING: THIS FILE WAS AUTOGENERATED! DO NOT EDIT! -->', '')
    text = tidy(head + '\n' + body.strip() + '\n')
    files = {Path(k).name: v for k, v in res.get('outputs', {}).items()}
    readme, fdir = REPO/'README.md', REPO/FILES_DIR
    if check:
        same = readme.exists() and readme.read_text(encoding='utf-8') == text
        old = {p.name: p.read_bytes() for p in fdir.iterdir()} if fdir.is_dir() else {}
        if same and old == files:
            print('README.md is up to date')
            return 0
        print('README.md is out of date: run python tools/render_readme.py')
        return 1
    readme.write_text(text, encoding='utf-8')
    if fdir.is_dir(): shutil.rmtree(fdir)
    if files:
        fdir.mkdir()
        for name, data in sorted(files.items()): (fdir/name).write_bytes(data)
    also = f' and {len(files)} file(s) in {FILES_DIR}/' if files else ''
    print(f'wrote README.md{also} from {nb_path.relative_to(REPO)}')
    return 0


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--check', action='store_true', help='exit 1 if README.md is not what this would write')
    sys.exit(render(ap.parse_args().check))

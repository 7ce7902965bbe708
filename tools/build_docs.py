#!/usr/bin/env python
"""Build the docs site into `_docs/`:  `python tools/build_docs.py`

Where Quarto is installed this runs `nbdev_docs` and nothing else.

Where it is not (the project's own machines: no package registry carries Quarto), it runs the
steps `nbdev_docs` runs before it calls Quarto, through nbdev's public API -- `refresh_quarto_yml` and
`proc_nbs`, so `show_doc`, `#| hide`, `#| export`, `#| echo: false` and the rest apply exactly as they do
for Quarto -- and renders nbdev's processed notebooks (`_proc/`) with nbconvert's 'basic' HTML template
inside a small page shell of its own. (`nbdev_docs` also rebuilds `_modidx.py` and the sidebar: here
`nbdev_export` keeps `_modidx.py` current, which tests/test_export.py checks, and the sidebar is ours,
`custom_sidebar = True`, which nbdev leaves alone.) nbdev functions this relies on beyond its public API are
pinned by tests/test_docs_site.py's `test_the_nbdev_the_docs_rely_on`, which names any that changed.

- the pages and the sidebar's sections from `nbs/sidebar.yml`, the file Quarto reads too
  (settings.ini has `custom_sidebar = True`, so nbdev leaves it alone). Its entries are patterns, not lists:
  `index.ipynb`, then a section "Lessons" of `0*.ipynb` and a section "Engine" of `1*.ipynb`, expanded as
  Quarto expands them (files matching the glob, `_`/`.` names skipped, by file name unless a numeric `order`
  is in the front matter), so a new notebook appears in its section by its number alone. A notebook no
  entry matches is still built, and listed after the sections, with a warning;
- each page named as Quarto names it (the `output-file` nbdev writes into each page's front matter:
  `00_encoding.ipynb` -> `encoding.html`);
- a sidebar on every page listing every page under its section (titles from each notebook's first `# `
  heading), and an "On this page" list of its sections;
- heading ids made the way pandoc makes them (`### Vocab.encode` -> `#vocab.encode`), so the API
  links nbdev adds (`encoding.html#vocab`) resolve;
- Quarto cell options nbdev leaves in cells (`echo`, `output`, `include`, `code-fold`,
  `code-summary`, `fig-cap`, `fig-alt`, `warning`) applied, and pandoc-only markdown
  (`[source](url){target="_blank"}`, `::: {.callout-note}` divs, `{#id}` on headings) turned into HTML;
- links between notebooks (`02_model.ipynb#x` -> `model.html#x`) and absolute links into the
  published site (`doc_host` + `doc_baseurl`, as nbdev writes them) made relative;
- figures from cell outputs embedded as data URIs; the page shell's own stylesheet (`tools/site.css` and
  pygments' colours) and `nbs/styles.css` written beside the pages and linked; no script and nothing
  fetched from the network.

The output depends only on the notebooks, the package and settings.ini: every notebook is
processed afresh each time (nbdev's `_proc/` cache can keep links that are out of date);
`--cached` reuses the processed notebooks that are newer than their source, for quick previews.

Options:  --cached      reuse up-to-date notebooks in `_proc/`
          --workers N   processes for nbdev's notebook processing (default 1)
"""
from __future__ import annotations

import argparse, html, os, re, shutil, sys, time, warnings
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ nbdev's processing

def setup_env():
    "Run from the repo root (nbdev finds settings.ini from the cwd), with a non-interactive matplotlib."
    os.chdir(REPO)
    os.environ.setdefault('MPLBACKEND', 'Agg')
    os.environ.pop('IN_TEST', None)  # nbdev's docs steps behave differently under its tests


def page_of(nb:Path, nbs:Path) -> str:
    "The page nbdev makes of notebook `nb` in `nbs` (`00_encoding.ipynb` -> `encoding.html`)."
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    fm = NBProcessor(nb, procs=FrontmatterProc, process=True).nb.frontmatter_
    return (Path(nb).parent.relative_to(nbs)/fm['output-file']).as_posix()


def nbdev_processing(workers:int, cached:bool) -> tuple[Path, Path]:
    "What nbdev's docs build does before Quarto, minus installing it: returns (nbs_path, processed_path)."
    from nbdev.config import get_config
    from nbdev.quarto import refresh_quarto_yml
    from nbdev.serve import proc_nbs
    cfg = get_config()
    nbs = Path(cfg.nbs_path)
    refresh_quarto_yml()
    # nbdev warns about every cell that mixes imports with other code (it runs such cells to make
    # show_doc work), also where that works; keep that out of the log: a cell that fails stops the build.
    quiet = 'ignore:Found cells containing imports:UserWarning'
    # nbdev's worker processes read it from the environment
    os.environ['PYTHONWARNINGS'] = ','.join(filter(None, [os.environ.get('PYTHONWARNINGS'), quiet]))
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Found cells containing imports')
        try: cache = proc_nbs(nbs, n_workers=workers, force=not cached)
        except Exception as e: sys.exit(proc_error(e))
    return nbs, Path(cache)


_re_error_line = r'^(\w+(?:Error|Exception|Exit)\b.*)$'

def proc_error(e:Exception) -> str:
    "What went wrong in nbdev's processing, and what to do about it."
    why = ''
    for c in (e.__cause__, e.__context__):
        if c is None: continue
        errs = [f'{type(c).__name__}: {c}']
        if 'Traceback' in str(c): errs = re.findall(_re_error_line, str(c), re.MULTILINE)
        errs = [o for o in errs if not o.startswith('Exception: Error in notebook')]
        if errs:
            why = errs[0]
            break
    return ("nbdev could not process the notebooks for the docs (nbdev_docs fails the same way with Quarto):"
            f"\n{e}\n" + (f"-> {why}\n" if why else '') +
            "\nTo build docs nbdev runs only some cells of each notebook, in one shell per notebook: "
            "exported cells, show_doc cells and every cell that contains an import; all other cells are "
            "skipped. A cell that mixes an import with code needing a skipped cell fails like this: move "
            "its imports into a cell of their own (nbdev's FAQ: 'Found cells containing imports and other "
            "code').")


_DOC_EXTS = ('.ipynb', '.qmd', '.md')

def _front_order(path:Path):
    "The numeric `order` in a notebook's or markdown file's front matter, if any (Quarto sorts by it)."
    import yaml
    try:
        if path.suffix == '.ipynb':
            import json
            cells = json.loads(path.read_text(encoding='utf-8')).get('cells', [])
            raw = next((''.join(c['source']) for c in cells if c['cell_type'] == 'raw'), '')
        else: raw = path.read_text(encoding='utf-8')
        m = re.match(r'\s*---\s*\n(.*?)\n---', raw, re.DOTALL)
        o = (yaml.safe_load(m[1]) or {}).get('order') if m else None
        return float(o) if isinstance(o, (int, float)) else None
    except Exception: return None


def expand_contents(spec, nbs:Path) -> list[str]:
    "A sidebar `contents` entry as Quarto expands it (a file, a folder, a glob), sorted by `order`, name."
    spec = str(spec).strip().lstrip('/')
    if spec == 'auto': spec = '**/*'
    if (nbs/spec).is_file(): return [spec]
    pattern = f'{spec}/**/*' if (nbs/spec).is_dir() else spec
    found = [p for p in nbs.glob(pattern) if p.is_file() and p.suffix in _DOC_EXTS
             and not any(part.startswith(('_', '.')) for part in p.relative_to(nbs).parts)]
    key = lambda p: (_front_order(p) is None, _front_order(p) or 0, p.relative_to(nbs).as_posix())
    return [p.relative_to(nbs).as_posix() for p in sorted(found, key=key)]


def sidebar_sections(nbs:Path) -> list[tuple[str|None, list[str]]]:
    """The sidebar of `nbs/sidebar.yml` as (section title or None, page sources) groups, in order, patterns
    expanded; then any notebook it does not reach, in a last untitled group (Quarto builds those too)."""
    import yaml
    side = yaml.safe_load((nbs/'sidebar.yml').read_text()) if (nbs/'sidebar.yml').exists() else {}
    contents = ((side or {}).get('website', {}).get('sidebar', {}) or {}).get('contents') or 'auto'
    groups, seen = [], set()
    def add(title, srcs):
        srcs = [s for s in srcs if s not in seen]
        seen.update(srcs)
        if srcs:
            if groups and groups[-1][0] == title and title is None: groups[-1][1].extend(srcs)
            else: groups.append((title, srcs))
    def walk(items, title):
        if isinstance(items, str): return add(title, expand_contents(items, nbs))
        for o in items or []:
            if isinstance(o, str): add(title, expand_contents(o, nbs))
            elif isinstance(o, dict):
                if 'auto' in o: add(title, expand_contents(o['auto'], nbs))
                elif 'section' in o:
                    sec = str(o.get('section') or o.get('text') or '')
                    if o.get('href'): add(sec, expand_contents(o['href'], nbs))
                    walk(o.get('contents'), sec)
                elif 'href' in o: add(title, expand_contents(o['href'], nbs))
    walk(contents, None)
    rest = [s for s in expand_contents('**/*.ipynb', nbs) if s not in seen]
    if rest:
        print(f'  warning: no entry of {nbs.name}/sidebar.yml matches {", ".join(rest)}: '
              'listed after its sections')
        add(None, rest)
    return groups

# ------------------------------------------------------------ Quarto/pandoc bits nbconvert does not know

_re_qopt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def cell_options(src:str) -> tuple[dict, str]:
    "Split the Quarto `#| key: value` lines nbdev leaves at the top of a code cell from its code."
    import yaml
    lines, opts = src.splitlines(), {}
    i = 0
    while i < len(lines) and (m := _re_qopt.match(lines[i])):
        try: opts[m[1]] = yaml.safe_load(m[2]) if m[2] else None
        except yaml.YAMLError: opts[m[1]] = m[2]
        i += 1
    return opts, '\n'.join(lines[i:]).strip('\n')


def _attrs_html(spec:str) -> str:
    "pandoc attributes `{#id .class key=value}` as HTML attributes."
    ids, classes = [], []
    kvs = []
    for tok in re.findall(r'''[\w-]+=(?:"[^"]*"|'[^']*'|[^\s}]+)|[#.][\w:.-]+''', spec):
        if tok[0] == '#': ids.append(tok[1:])
        elif tok[0] == '.': classes.append(tok[1:])
        else:
            k, v = tok.split('=', 1)
            kvs.append((k, v.strip('"\'')))
    out = [f'id="{html.escape(ids[0])}"'] if ids else []
    if classes: out.append(f'class="{html.escape(" ".join(classes))}"')
    out += [f'{k}="{html.escape(v)}"' for k, v in kvs]
    return ' '.join(out)


_re_link_attrs = re.compile(r'(?<!!)\[([^\]\n]*)\]\(([^)\s]+)\)\{([^}\n]*)\}')
_re_div_open = re.compile(r'^\s*:::+\s*\{?([^}]*)\}?\s*$')
_re_div_close = re.compile(r'^\s*:::+\s*$')
_re_head_attrs = re.compile(r'^(#{1,6}\s.*?)\s*\{([^}]*)\}\s*$')
_CALLOUT_TITLES = {'note': 'Note', 'tip': 'Tip', 'warning': 'Warning', 'caution': 'Caution',
                   'important': 'Important'}


def pandoc_md(md:str) -> str:
    "Turn the pandoc-only markdown Quarto understands into the HTML it would produce (outside code fences)."
    out, in_fence = [], False
    for line in md.splitlines():
        if line.lstrip().startswith(('```', '~~~')):
            in_fence = not in_fence
            out.append(line)
        elif in_fence: out.append(line)
        elif _re_div_close.match(line): out += ['', '</div>', '']
        else: out += _pandoc_lines(line)
    return '\n'.join(out)


def _pandoc_lines(line:str) -> list[str]:
    "A markdown line outside code fences, its pandoc-only parts (divs, heading ids, link attributes) as HTML."
    m = _re_div_open.match(line)
    if m:
        spec = m[1].strip()
        if not spec.startswith(('#', '.')) and '=' not in spec: spec = '.' + spec if spec else ''
        classes = re.findall(r'\.([\w-]+)', spec)
        callout = next((c.split('-', 1)[1] for c in classes if c.startswith('callout-')), None)
        attrs = _attrs_html(spec)
        if callout and 'class="' in attrs: attrs = attrs.replace('class="', 'class="callout ', 1)
        elif callout: attrs = 'class="callout"'
        out = ['', f'<div {attrs}>' if attrs else '<div>', '']
        if callout in _CALLOUT_TITLES: out += [f'<p class="callout-title">{_CALLOUT_TITLES[callout]}</p>', '']
        return out
    m = _re_head_attrs.match(line)
    if m:
        ids = re.findall(r'#([\w:.-]+)', m[2])
        line = m[1] + (f' <span class="pandoc-id" id="{html.escape(ids[0])}"></span>' if ids else '')
    def link(m): return f'<a href="{html.escape(m[2])}" {_attrs_html(m[3])}>{m[1]}</a>'
    return [_re_link_attrs.sub(link, line)]


def pandoc_id(text:str) -> str:
    "The identifier pandoc's `auto_identifiers` gives a heading with this text."
    s = re.sub(r'[^\w\s.-]', '', text.strip(), flags=re.UNICODE)
    s = re.sub(r'\s+', '-', s).lower()
    s = re.sub(r'^[^a-z]+', '', s, flags=re.UNICODE) if not re.match(r'^[^\W\d_]', s) else s
    return s or 'section'

# ------------------------------------------------------------------ one notebook -> one page body

def read_frontmatter(nb) -> dict:
    "The YAML front matter nbdev's FrontmatterProc puts in the first (raw) cell, removed from `nb`."
    import yaml
    if nb.cells and nb.cells[0].cell_type == 'raw' and nb.cells[0].source.lstrip().startswith('---'):
        m = re.match(r'\s*---\s*\n(.*?)\n---', nb.cells[0].source, re.DOTALL)
        if m:
            nb.cells.pop(0)
            return yaml.safe_load(m[1]) or {}
    return {}


def prepare_nb(nb, md=pandoc_md):
    "Apply Quarto's cell options to a processed notebook and `md` to its markdown (cells, outputs), in place."
    # saved widget state would make nbconvert show a widget view the static site cannot run;
    # without it, the text/html fallback shows
    nb.metadata.pop('widgets', None)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            cell.source = md(cell.source)
        elif cell.cell_type == 'code':
            opts, cell.source = cell_options(cell.source)
            if opts.get('include') is False: continue
            if opts.get('echo') is False or not cell.source.strip():
                cell.metadata.setdefault('transient', {})['remove_source'] = True
            if opts.get('output') is False: cell.outputs = []
            if opts.get('warning') is False:
                cell.outputs = [o for o in cell.outputs
                                if not (o.output_type == 'stream' and o.name == 'stderr')]
            fold = opts.get('code-fold')
            if fold not in (None, False, 'false'):
                summary = str(opts.get('code-summary') or 'Code')
                cell.metadata['charrnn_fold'] = {'open': fold == 'show', 'summary': summary}
            if opts.get('fig-cap'): cell.metadata['charrnn_figcap'] = str(opts['fig-cap'])
            alt = opts.get('fig-alt') or opts.get('fig-cap')
            if alt: cell.metadata['alt'] = str(alt)
            for o in cell.outputs:
                mdo = o.get('data', {}).get('text/markdown')
                if mdo is None: continue
                o.data['text/markdown'] = md(''.join(mdo) if isinstance(mdo, list) else mdo)
            if not cell.outputs and cell.metadata.get('transient', {}).get('remove_source'): continue
        elif cell.cell_type == 'raw':
            fmt = (cell.metadata.get('format') or cell.metadata.get('raw_mimetype') or '').lower()
            if fmt not in ('text/html', 'html'): continue
            cell.metadata['raw_mimetype'] = 'text/html'
        cells.append(cell)
    nb.cells = cells
    return nb


_TEMPLATE = r"""{%- extends 'basic/index.html.j2' -%}
{% block input_group -%}
{%- set fold = cell.metadata.get('charrnn_fold') -%}
{%- if fold -%}
<details class="code-fold"{{ ' open' if fold.open }}><summary>{{ fold.summary | escape_html }}</summary>
{{ super() }}
</details>
{%- else -%}
{{ super() }}
{%- endif -%}
{%- endblock input_group %}
{% block output_group -%}
{{ super() }}
{%- if cell.metadata.get('charrnn_figcap') %}
<p class="figure-caption">{{ cell.metadata.charrnn_figcap | escape_html }}</p>
{%- endif -%}
{%- endblock output_group %}
"""

_exporter = None

def exporter():
    global _exporter
    if _exporter is None:
        from jinja2 import DictLoader
        from nbconvert import HTMLExporter
        loader = DictLoader({'charrnn_page.html.j2': _TEMPLATE})
        _exporter = HTMLExporter(template_name='basic', extra_loaders=[loader],
                                 template_file='charrnn_page.html.j2', exclude_input_prompt=True,
                                 exclude_output_prompt=True, exclude_anchor_links=True)
    return _exporter

# ------------------------------------------------------------------ the page shell and the links

def page_shell(*, title, description, body, site, pages, current, toc, prev, next_, root) -> str:
    e = html.escape
    def item(p):
        active = ' class="active" aria-current="page"' if p['out'] == current else ''
        return f'<li><a href="{root}{p["out"]}"{active}>{e(p["title"])}</a></li>'
    groups = []
    for p in pages:
        if not groups or groups[-1][0] != p.get('section'): groups.append((p.get('section'), []))
        groups[-1][1].append(item(p))
    def group(sec, items):
        if not sec: return '\n'.join(items)
        return (f'<li class="sidebar-section"><span class="sidebar-section-title">{e(sec)}</span><ul>\n'
                + '\n'.join(items) + '\n</ul></li>')
    side = '\n'.join(group(sec, items) for sec, items in groups)
    toc_html = ''
    if toc:
        items = '\n'.join(f'<li class="toc-h{lvl}"><a href="#{e(i)}">{e(t)}</a></li>' for lvl, i, t in toc)
        toc_html = ('<nav class="toc" aria-label="On this page"><h2>On this page</h2>'
                    f'<ul>\n{items}\n</ul></nav>')
    nav = ''
    if prev or next_:
        back = f'<a class="prev" href="{root}{prev["out"]}">&larr; {e(prev["title"])}</a>' if prev else ''
        on = f'<a class="next" href="{root}{next_["out"]}">{e(next_["title"])} &rarr;</a>' if next_ else ''
        nav = f'<nav class="page-navigation">{back or "<span></span>"}{on}</nav>'
    desc = f'\n<p class="description">{e(description)}</p>' if description else ''
    repo = ''
    if site.get('repo_url'): repo = f'<a class="repo-link" href="{e(site["repo_url"])}">Source on GitHub</a>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="nbdev + nbconvert (tools/build_docs.py)">
<title>{e(title)} – {e(site['title'])}</title>
<meta name="description" content="{e(description or site.get('description', ''))}">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{root}site.css">
<link rel="stylesheet" href="{root}styles.css">
</head>
<body>
<header class="navbar"><a class="site-title" href="{root}index.html">{e(site['title'])}</a>{repo}</header>
<div class="layout">
<nav class="sidebar" aria-label="Pages"><ul>
{side}
</ul></nav>
<main class="content" id="quarto-document-content">
<header id="title-block-header"><h1 class="title">{e(title)}</h1>{desc}</header>
{body}
{nav}
</main>
{toc_html}
</div>
</body>
</html>
"""


def fix_html(doc:str, *, link_map:dict, site_prefix:str, page_dir:str) -> tuple[str, list]:
    "Heading ids, anchors, relative links and Quarto's class names in a rendered page body; -> (html, toc)."
    from bs4 import BeautifulSoup
    soup = main = BeautifulSoup(doc, 'html.parser')
    for el in soup.select('[id^="cell-id="]'): del el['id']    # nbdev's new cells get random ids
    used, toc = set(), []
    for h in main.find_all(re.compile(r'^h[1-6]$')):
        span = h.find('span', class_='pandoc-id')
        if span:
            hid = span['id']
            span.decompose()
        else: hid = pandoc_id(h.get_text(' ', strip=True))
        base, n = hid, 0
        while hid in used:
            n += 1
            hid = f'{base}-{n}'
        used.add(hid)
        h['id'] = hid
        h['class'] = (h.get('class') or []) + ['anchored']
        attrs = {'class': 'anchor-link', 'href': f'#{hid}', 'aria-label': 'Link to this section'}
        a = soup.new_tag('a', attrs=attrs)
        a.string = '#'
        h.append(a)
        in_api = h.find_parent(class_='output_markdown') is not None
        if h.name in ('h2', 'h3') and not (in_api and h.name == 'h2'):
            toc.append((int(h.name[1]), hid, h.get_text(' ', strip=True).rstrip('#').strip()))
    for a in main.find_all('a', href=True):
        a['href'] = rewrite_link(a['href'], link_map, site_prefix, page_dir)
    for el in main.select('.output_subarea'):
        cls = el['class']
        if 'output_stdout' in cls: extra = ['cell-output', 'cell-output-stdout']
        elif 'output_stderr' in cls: extra = ['cell-output', 'cell-output-stderr']
        elif 'output_error' in cls: extra = ['cell-output', 'cell-output-error']
        else: extra = ['cell-output', 'cell-output-display']
        el['class'] = cls + extra
    for el in main.select('.cell > .input'): el['class'] = el['class'] + ['sourceCode']
    for img in main.select('.cell-output-display img'):
        img['class'] = (img.get('class') or []) + ['figure-img']
        if not img.get('alt'): img['alt'] = 'figure from a cell output'
    return str(soup), toc


def rewrite_link(href:str, link_map:dict, site_prefix:str, page_dir:str) -> str:
    "Links to notebooks and to the published site, as relative links to the pages built here."
    if site_prefix and href.startswith(site_prefix):
        href = href[len(site_prefix):].lstrip('/') or 'index.html'
        page = href.split('#')[0]
        href = os.path.relpath(page, page_dir or '.') + href[len(page):]   # and the '#fragment', if any
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or not parts.path: return href
    path = parts.path
    target = os.path.normpath(os.path.join(page_dir, path)) if page_dir else os.path.normpath(path)
    if target in link_map:  # a page built here (a link to any other notebook is left broken, for the tests)
        path = os.path.relpath(link_map[target], page_dir or '.')
        query = f'?{parts.query}' if parts.query else ''
        return path + query + (f'#{parts.fragment}' if parts.fragment else '')
    return href

# ------------------------------------------------------------------ the site

SITE_CSS = Path(__file__).resolve().parent/'site.css'   # the page shell's look, after Quarto's cosmo


def site_css() -> str:
    "tools/site.css, then pygments' 'default' colours for the highlighted code."
    from pygments.formatters import HtmlFormatter
    code = HtmlFormatter(style='default').get_style_defs('.highlight')
    head = '\n/* code highlighting (pygments "default") */\n'
    return SITE_CSS.read_text(encoding='utf-8') + head + code + '\n'


def site_settings(nbs:Path) -> dict:
    import yaml
    from nbdev.config import get_config
    cfg = get_config()
    try: w = (yaml.safe_load((nbs/'nbdev.yml').read_text()) or {}).get('website', {})
    except FileNotFoundError: w = {}
    site_url = w.get('site-url') or (cfg.get('doc_host', '') + cfg.get('doc_baseurl', ''))
    return dict(title=w.get('title') or cfg.get('title') or cfg.lib_name,
                description=w.get('description') or cfg.get('description', ''),
                repo_url=w.get('repo-url') or cfg.get('git_url', ''),
                site_prefix=site_url.rstrip('/') + '/')


def load_page(src_rel:str, nbs:Path, proc:Path, section:str|None=None) -> dict | None:
    "A sidebar entry as a page: its processed notebook, front matter and output name."
    import nbformat, yaml
    p = proc/src_rel
    if not p.exists():
        p = proc/Path(src_rel).with_suffix('')   # nbdev turns `x.qmd.py` scripts into `x.qmd`
        if not p.exists():
            print(f'  skipped {src_rel}: no processed file in {proc.name}/')
            return None
    if p.suffix == '.ipynb':
        nb = nbformat.read(p, as_version=4)
    elif p.suffix in ('.md', '.qmd'):
        text = p.read_text(encoding='utf-8')
        fm = {}
        m = re.match(r'\s*---\s*\n(.*?)\n---\s*\n', text, re.DOTALL)
        if m: fm, text = yaml.safe_load(m[1]) or {}, text[m.end():]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_raw_cell('---\n' + yaml.safe_dump(fm) + '---'),
                                             nbformat.v4.new_markdown_cell(text)])
        if '{{<' in text or '```{' in text:
            print(f'  note: {src_rel} uses Quarto-only syntax; rendered as plain markdown')
    else:
        print(f'  skipped {src_rel}: only notebooks and markdown render without Quarto')
        return None
    fm = read_frontmatter(nb)
    out = fm.get('output-file')
    # nbdev names a notebook's page in its front matter; Quarto names a markdown page after its file
    out = (Path(src_rel).parent/out).as_posix() if out else Path(src_rel).with_suffix('.html').as_posix()
    title = fm.get('title') or fm.get('pagetitle') or Path(src_rel).stem
    return dict(src=src_rel, out=out, nb=nb, title=str(title), description=str(fm.get('description') or ''),
                section=section)


def render_site(nbs:Path, proc:Path, dest:Path) -> list[dict]:
    site = site_settings(nbs)
    loaded = (load_page(s, nbs, proc, sec) for sec, srcs in sidebar_sections(nbs) for s in srcs)
    pages = [p for p in loaded if p]
    if not any(p['out'] == 'index.html' for p in pages):   # no index notebook yet: a plain contents page
        import nbformat
        def entry(p):
            return f'- [{p["title"]}]({p["out"]})' + (f': {p["description"]}' if p['description'] else '')
        items = '\n'.join(entry(p) for p in pages)
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f'## Contents\n\n{items}')])
        pages.insert(0, dict(src=None, out='index.html', nb=nb, title=site['title'],
                             description=site['description']))
    link_map = {os.path.normpath(p['src']): p['out'] for p in pages if p['src']}
    if dest.exists(): shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for i, page in enumerate(pages):
        body, _ = exporter().from_notebook_node(prepare_nb(page['nb']))
        page_dir = os.path.dirname(page['out'])
        body, toc = fix_html(body, link_map=link_map, site_prefix=site['site_prefix'], page_dir=page_dir)
        doc = page_shell(title=page['title'], description=page['description'], body=body, site=site,
                         pages=pages, current=page['out'], toc=toc, prev=pages[i-1] if i else None,
                         next_=pages[i+1] if i+1 < len(pages) else None,
                         root='../' * len(Path(page['out']).parent.parts))
        out = dest/page['out']
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(doc, encoding='utf-8')
        copy_local_images(doc, nbs, dest, page_dir)
    (dest/'site.css').write_text(site_css(), encoding='utf-8')
    if (nbs/'styles.css').exists(): shutil.copyfile(nbs/'styles.css', dest/'styles.css')
    else: (dest/'styles.css').write_text('/* no nbs/styles.css */\n')
    return pages


def copy_local_images(doc:str, nbs:Path, dest:Path, page_dir:str):
    "Images that markdown cells link to by relative path (`![](images/x.png)`), copied beside the pages."
    for src in re.findall(r'<img[^>]+src="([^"]+)"', doc):
        u = urlsplit(html.unescape(src))
        if u.scheme or u.netloc or not u.path: continue
        rel = os.path.normpath(os.path.join(page_dir, u.path))
        if rel.startswith('..') or not (nbs/rel).is_file(): continue
        (dest/rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(nbs/rel, dest/rel)

# ------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--cached', action='store_true',
                    help="reuse processed notebooks in _proc/ that are newer than their source")
    ap.add_argument('--workers', type=int, default=1,
                    help='processes for nbdev processing (0: in this process; '
                         'each process imports torch, so 1 is fastest on 2 busy cores)')
    ap.add_argument('--no-quarto', action='store_true',
                    help='use the nbconvert build even where Quarto is installed')
    args = ap.parse_args(argv)
    setup_env()
    from nbdev.config import get_config
    if shutil.which('quarto') and not args.no_quarto:
        print('quarto found: running nbdev_docs')
        from nbdev.quarto import nbdev_docs
        nbdev_docs(path=str(get_config().nbs_path))  # given an argument, @call_parse reads no sys.argv
        return
    t0 = time.time()
    nbs, proc = nbdev_processing(args.workers, args.cached)
    t1 = time.time()
    dest = Path(get_config().doc_path)
    pages = render_site(nbs, proc, dest)
    t2 = time.time()
    print(f'built {len(pages)} pages into {dest.relative_to(REPO)}/ without Quarto '
          f'(nbdev processing {t1-t0:.1f}s, HTML {t2-t1:.1f}s): ' + ', '.join(p['out'] for p in pages))


if __name__ == '__main__':
    main()

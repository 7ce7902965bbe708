"""Drop the progress bars that a notebook run by `jupyter nbconvert --execute` saves, frozen at 0.

fastprogress draws its bar as an HTML display (a style block, then the bar) and moves it with display updates,
which nbconvert does not apply to the saved outputs: every bar is saved empty. Run this on a notebook after
executing it, before `nbdev_clean`:

    python tools/drop_bars.py nbs/03_training.ipynb [more.ipynb ...]
"""
import json, sys
from pathlib import Path


def is_bar(output:dict) -> bool:
    "Whether `output` is one of fastprogress's displays: its style block or a bar."
    html = ''.join(output.get('data', {}).get('text/html', []))
    fastprogress = '<progress ' in html or 'progress-bar-interrupted' in html
    return output.get('output_type') == 'display_data' and fastprogress


def drop_bars(path:Path) -> int:
    "Remove the progress-bar outputs of the notebook at `path`, in place; how many were removed."
    nb = json.loads(path.read_text())
    dropped = 0
    for cell in nb['cells']:
        if cell['cell_type'] != 'code': continue
        kept = [o for o in cell['outputs'] if not is_bar(o)]
        dropped += len(cell['outputs']) - len(kept)
        cell['outputs'] = kept
    if dropped: path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return dropped


if __name__ == '__main__':
    if len(sys.argv) < 2: sys.exit(__doc__)
    for p in sys.argv[1:]: print(f"{p}: {drop_bars(Path(p))} progress-bar outputs dropped")

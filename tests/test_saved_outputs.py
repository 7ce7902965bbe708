"What the notebooks carry as saved outputs: real results, and no progress bars frozen at 0 by nbconvert."
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'tools'))
from drop_bars import is_bar, drop_bars


def test_no_notebook_saves_a_progress_bar():
    "Every bar `jupyter nbconvert --execute` saves is empty: tools/drop_bars.py removes them after a run."
    found = [f"{p.name}: cell {c['id']}" for p in sorted((ROOT/'nbs').glob('*.ipynb'))
             for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'code'
             for o in c['outputs'] if is_bar(o)]
    assert not found, f"saved progress bars (run python tools/drop_bars.py on the notebook): {found}"


def test_drop_bars_keeps_every_other_output(tmp_path):
    css = '<style>.progress-bar-interrupted {}</style>'
    style = {'output_type': 'display_data', 'data': {'text/html': [css]}}
    bar = {'output_type': 'display_data', 'data': {'text/html': ["<progress value='0' max='20'></progress>"]}}
    text = {'output_type': 'stream', 'name': 'stdout', 'text': ['step 10 | val 2.1\n']}
    table = {'output_type': 'display_data', 'data': {'text/html': ['<table><tr><td>1</td></tr></table>']}}
    nb = {'cells': [{'cell_type': 'code', 'id': 'a', 'outputs': [style, bar, text, table], 'source': []},
                    {'cell_type': 'markdown', 'id': 'b', 'source': ['<progress value=1>']}],
          'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    p = tmp_path/'x.ipynb'
    p.write_text(json.dumps(nb))
    assert drop_bars(p) == 2
    assert json.loads(p.read_text())['cells'][0]['outputs'] == [text, table]
    assert drop_bars(p) == 0

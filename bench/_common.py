"""Shared helpers for the benchmark scripts: machine info, the lesson baseline, JSON lines and a table."""
import json, os, platform, subprocess, sys, time
from pathlib import Path

import torch

from charrnn.data import get_corpus

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO/'bench'/'lesson_baseline.py'   # the original lesson's approach, in this repository
CORPUS = get_corpus('tinyshakespeare')         # the package's copy: no network, nothing outside the repo


def machine() -> dict:
    "What the figures were measured on."
    cpu = platform.processor() or platform.machine()
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError: pass
    info = dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                python=platform.python_version())
    try: info['cpu_bf16'] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception: info['cpu_bf16'] = False
    if torch.cuda.is_available(): info['gpu'] = torch.cuda.get_device_name(0)
    return info


def emit(record:dict):
    "Print one figure as a JSON line."
    print(json.dumps(record), flush=True)


def table(rows:list, cols:list) -> str:
    "A markdown table of `rows` (dicts) with columns `cols`."
    def fmt(v):
        if isinstance(v, (int, float)) and abs(v) >= 100: return f'{v:,.0f}'
        return f'{v:.3f}' if isinstance(v, float) else str(v)
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    lines += ['| ' + ' | '.join(fmt(r.get(c, '')) for c in cols) + ' |' for r in rows]
    return '\n'.join(lines)


def run_baseline(text=CORPUS, steps:int=10, gen:int=300, gpu:bool=False, train:bool=True) -> dict:
    "Run the original lesson's approach (bench/lesson_baseline.py) in a subprocess; return its JSON."
    cmd = [sys.executable, str(BASELINE), str(text), '--steps', str(steps), '--gen', str(gen)]
    cmd += (['--gpu'] if gpu else []) + ([] if train else ['--no-train'])
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res['wall_s'] = round(time.perf_counter() - t, 1)
    return res


def summary(doc:str) -> str:
    "The first paragraph of a docstring on one line: the description `--help` prints."
    return ' '.join(doc.split('\n\n')[0].split())


def sync(device):
    "Wait for the device's queued work (CUDA), so that a timer stops after it."
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()

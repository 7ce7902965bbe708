"""Milliseconds per training step, and characters per second, of the CPU recipe and variations of it.

Each argument is a JSON object of `ModelConfig` and `TrainConfig` settings over the CPU recipe
(`charrnn.run.recipe`: today a 2×448 LSTM with LayerNorms between its layers, no dropout, batches of 32 × 64);
each is trained on tiny
Shakespeare (the package's copy) by a `RunLearner` for 10 steps of warm-up, then timed over `--steps` more.
`--profile` prints
`torch.profiler`'s table of the timed steps of the first setting instead. Run it on an idle machine;
`--threads` sets torch's threads (default 2, the recipe's target):

    python bench/step_time.py '{"precision": "bf16"}' '{"precision": "fp32"}' '{"cell": "gru"}'
    python bench/step_time.py --profile '{"precision": "bf16", "seq_len": 64, "lr": 0.005}'
"""
import argparse, json, time
import torch
from _common import machine, emit, summary
from charrnn.run import prepare_text, recipe
from charrnn.model import CharModel, ModelConfig
from charrnn.training import TrainConfig
from charrnn.runlearner import RunLearner

RECIPE = recipe(torch.device('cpu'))  # what `charrnn train` uses on a CPU; its run length is ours
MODEL = RECIPE['model']
TRAIN = {**RECIPE['train'], 'time_limit': None, 'max_steps': 10**6, 'eval_every': 10**6}


def learner(settings:dict, prepared) -> RunLearner:
    "A learner of the recipe with `settings` over it, at its 10th step (the warm-up taken)."
    model_keys = {k: settings[k] for k in settings if k in ModelConfig.__dataclass_fields__}
    train_keys = {k: settings[k] for k in settings if k not in model_keys}
    model = CharModel(prepared[0], ModelConfig(**{**MODEL, **model_keys}))
    learn = RunLearner(model, prepared[1], prepared[2], TrainConfig(**{**TRAIN, **train_keys}), quiet=True)
    learn.fire('before_fit')
    for _ in range(10): learn.one_step()
    return learn


def timed(learn:RunLearner, steps:int) -> float:
    "Milliseconds per step over `steps` steps."
    t = time.perf_counter()
    for _ in range(steps): learn.one_step()
    return 1000 * (time.perf_counter() - t) / steps


def main(a):
    torch.set_num_threads(a.threads)
    emit(dict(figure='machine', **machine()))
    prepared = prepare_text('tinyshakespeare')
    if a.profile:
        learn = learner(json.loads(a.settings[0]), prepared)
        cpu = torch.profiler.ProfilerActivity.CPU
        with torch.profiler.profile(activities=[cpu]) as p: timed(learn, a.steps)
        print(p.key_averages().table(sort_by='self_cpu_time_total', row_limit=20))
        return
    for spec in a.settings:
        learn = learner(json.loads(spec), prepared)
        ms = timed(learn, a.steps)
        chars = learn.cfg.batch_size * learn.cfg.seq_len
        emit(dict(figure='step', settings=json.loads(spec), ms_per_step=round(ms, 1),
                  chars_per_s=round(chars / ms * 1000)))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=summary(__doc__))
    ap.add_argument('settings', nargs='+', help='JSON objects of settings over the recipe')
    ap.add_argument('--steps', type=int, default=40, help='steps timed, after 10 of warm-up')
    ap.add_argument('--threads', type=int, default=2, help="torch's threads")
    ap.add_argument('--profile', action='store_true',
                    help="print torch.profiler's table for the first setting")
    main(ap.parse_args())

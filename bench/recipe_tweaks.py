"""The CPU recipe with changes that are not settings (issue 23 item 2): 180 s on tiny Shakespeare each.

`bench/recipe_search.py` tries what `ModelConfig` and `TrainConfig` can already say. This script tries what
issue 23 suggested beyond them, by patching PyTorch or charrnn inside its own process only: Adam's
second-moment decay (beta2), the forget gate's bias, orthogonal recurrent weights, a warm-up, stable, decay
schedule, weight dropout (DropConnect) on the recurrent weights and a layer-normalised LSTM cell (`LNLSTM`);
and LayerNorms between the fused LSTM layers, which began here as a patch and is now a setting of the model
(`ModelConfig.norm`, lesson 02), with a residual variant. A few settings changes, measured in the same
session, are here too so that one command covers the table in bench/README.md. Every run is
`charrnn.run.train` on the package's tiny Shakespeare with the CPU recipe of stop 27 (`STOP27`, the recipe
the table measured against; `recipe` is today's `charrnn.run.recipe`), its change, `time_limit` 180 s and
`--seed`; one run per call:

    python bench/recipe_tweaks.py base --seed 0        # stop 27's recipe itself: the control
    python bench/recipe_tweaks.py recipe --seed 0      # the current recipe
    python bench/recipe_tweaks.py wdrop10 --seed 0     # weight dropout 0.1 on the recurrent weights
    python bench/recipe_tweaks.py --list               # every tweak, with what it changes
    python bench/recipe_tweaks.py --step-time          # ms per step: the fused LSTM, the layer-normalised one

It prints one JSON line: the tweak, the seed, steps, the best validation loss (nats), wall seconds, the load
average after, and every validation. Time-limited runs measure the machine as much as the change: run it on
an otherwise idle machine, one run at a time, and compare with a `base` run of the same session.
"""
import argparse, json, os, time

import torch
import torch.nn.functional as F


def adam_betas(betas):
    "Adam with `betas` instead of PyTorch's (0.9, 0.999)."
    def patch():
        import charrnn.runlearner as rl
        rl.make_optimizer = lambda model, cfg: torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=betas)
    return patch


def lstm_init(forget_bias:bool=False, orthogonal:bool=False):
    "PyTorch's LSTM initialisation, then a forget-gate bias of 1, or orthogonal recurrent weights per gate."
    def patch():
        orig = torch.nn.LSTM.reset_parameters
        def reset(self):
            orig(self)
            H = self.hidden_size
            with torch.no_grad():
                for n, p in self.named_parameters():   # gates in PyTorch's order: input, forget, cell, output
                    if forget_bias and n.startswith('bias_ih'): p[H:2 * H].fill_(1.0)
                    if forget_bias and n.startswith('bias_hh'): p[H:2 * H].fill_(0.0)
                    if orthogonal and n.startswith('weight_hh'):
                        for k in range(4): torch.nn.init.orthogonal_(p[k * H:(k + 1) * H])
        torch.nn.LSTM.reset_parameters = reset
    return patch


def wsd(frac:float):
    "Warm-up, the peak rate, then a linear decay to 0 over the last `frac` of the run (not cosine)."
    def patch():
        import charrnn.training as tr
        def lr_at(cfg, step, progress):
            warm = min(1., (step + 1) / cfg.warmup) if cfg.warmup else 1.
            p = min(max(progress, 0.), 1.)
            return cfg.lr * warm * (1. if p < 1 - frac else (1 - p) / frac)
        tr.lr_at = lr_at
    return patch


def weight_drop(p_drop:float):
    "DropConnect: each forward pass in training drops `p_drop` of every recurrent weight matrix (a new mask)."
    def patch():
        orig = torch.nn.LSTM.__init__
        def init(self, *a, **k):
            orig(self, *a, **k)
            def hook(mod, args):  # the fused LSTM reads `_flat_weights`: give it the dropped matrices
                drop = lambda wn: wn.startswith('weight_hh') and mod.training
                mod._flat_weights = [F.dropout(getattr(mod, wn), p_drop) if drop(wn) else getattr(mod, wn)
                                     for wn in mod._flat_weights_names]
            self.register_forward_pre_hook(hook)
        torch.nn.LSTM.__init__ = init
    return patch


class LNLSTM(torch.nn.Module):
    "A layer-normalised LSTM (Ba et al., 2016) in plain PyTorch with `nn.LSTM`'s interface (batch first)."
    def __init__(self, n_in:int, hidden:int, layers:int):
        super().__init__()
        ins = [n_in] + [hidden] * (layers - 1)
        self.ih = torch.nn.ModuleList(torch.nn.Linear(n, 4 * hidden) for n in ins)
        self.hh = torch.nn.ModuleList(torch.nn.Linear(hidden, 4 * hidden, bias=False) for _ in ins)
        self.ln_gates = torch.nn.ModuleList(torch.nn.LayerNorm(4 * hidden) for _ in ins)
        self.ln_cell = torch.nn.ModuleList(torch.nn.LayerNorm(hidden) for _ in ins)
        self.hidden, self.layers = hidden, layers
    def forward(self, x, state=None):  # x: (B, T, n_in); state: (h, c), each (layers, B, hidden)
        B, T = x.shape[:2]
        if state is None: state = (x.new_zeros(self.layers, B, self.hidden),) * 2
        hs, cs = [], []
        for l in range(self.layers):
            h, c = state[0][l], state[1][l]
            outs = []
            xs = self.ih[l](x).unbind(1)  # the inputs' share of the gates, every step at once
            for t in range(T):
                z = self.ln_gates[l](xs[t] + self.hh[l](h)).chunk(4, -1)  # input, forget, cell, output
                c = torch.sigmoid(z[1]) * c + torch.sigmoid(z[0]) * torch.tanh(z[2])
                h = torch.sigmoid(z[3]) * torch.tanh(self.ln_cell[l](c))
                outs.append(h)
            x = torch.stack(outs, 1)
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))


def residual_norm():
    "`norm=True` with a residual path round every layer after the first: `x + norm(layer(x))`."
    def patch():
        import charrnn.model as cm
        def forward(self, x, hidden=None):
            states = []
            for l, (rnn, norm) in enumerate(zip(self.layers, self.norms)):
                y, s = rnn(x, cm.map_hidden(lambda t: t[l:l + 1], hidden))
                x = norm(y) if l == 0 else x + norm(y)
                states.append(s)
            return x, tuple(torch.cat(t) for t in zip(*states))
        cm.NormedLayers.forward = forward
    return patch


def lstm_body(cls):
    "The recipe's LSTM layers replaced by `cls(inputs, hidden, layers)` (`LNLSTM`)."
    def patch():
        import charrnn.model as cm
        cm.BODIES['lstm'] = lambda cfg: cls(cfg.emb_dim, cfg.hidden, cfg.layers)
    return patch


# The CPU recipe of stop 27, which every tweak changes (bench/README.md's item 7 measured against it). It
# names every setting the current recipe sets, so that none of the current recipe's leaks into a tweak.
STOP27 = dict(hidden=384, layers=2, dropout=0.0, norm=False, batch_size=32, seq_len=64, lr=5e-3,
              final_lr_frac=0.0, eval_every=250)

TWEAKS = {  # name: (what it changes, a patch to apply first or None, settings over the recipe)
    'base':    ("nothing: stop 27's recipe", None, {}),
    'recipe':  ('the current CPU recipe (`charrnn.run.recipe`)', None, None),
    'b99':     ("Adam's beta2 0.99", adam_betas((0.9, 0.99)), {}),
    'b95':     ("Adam's beta2 0.95", adam_betas((0.9, 0.95)), {}),
    'fbias':   ('forget-gate bias 1 at the start', lstm_init(forget_bias=True), {}),
    'orth':    ('orthogonal recurrent weights at the start', lstm_init(orthogonal=True), {}),
    'wsd30':   ('constant rate, then a linear decay to 0 over the last 30%', wsd(0.3), {}),
    'wdrop10': ('weight dropout 0.1 on the recurrent weights', weight_drop(0.1), {}),
    'wdrop25': ('weight dropout 0.25 on the recurrent weights', weight_drop(0.25), {}),
    'lnlstm':  ('a layer-normalised LSTM cell (unfused, in Python)', lstm_body(LNLSTM), {}),
    'lnout':   ("a LayerNorm on each fused layer's output (`norm=True`: between layers, before the read-out)",
                None, dict(norm=True)),
    'lnout7':  ('lnout, lr 7e-3', None, dict(norm=True, lr=7e-3)),
    'lnout10': ('lnout, lr 1e-2', None, dict(norm=True, lr=1e-2)),
    'lnout7w': ('lnout, lr 7e-3, 2×448', None, dict(norm=True, lr=7e-3, hidden=448)),
    'lnout7x': ('lnout, lr 7e-3, 2×512', None, dict(norm=True, lr=7e-3, hidden=512)),
    'lnout5w': ('lnout, lr 5e-3, 2×448', None, dict(norm=True, hidden=448)),
    'lnout7we': ('lnout, lr 7e-3, 2×448, validating every 1,000 steps', None,
                 dict(norm=True, lr=7e-3, hidden=448, eval_every=1000)),
    'lnres7':  ('lnout with a residual path round the second layer, lr 7e-3', residual_norm(),
                dict(norm=True, lr=7e-3)),
    'clip1':   ('gradient clip 1 (the recipe: 5)', None, dict(grad_clip=1.0)),
    'b64s32':  ('batch 64 × 32 (the same characters per step)', None, dict(batch_size=64, seq_len=32)),
    'b48lr6':  ('batch 48, lr 6e-3', None, dict(batch_size=48, lr=6e-3)),
    'drop05':  ('dropout 0.05', None, dict(dropout=0.05)),
    'drop10':  ('dropout 0.1', None, dict(dropout=0.1)),
    'emb128':  ('embedding 128 wide (the recipe: the vocabulary size, 65)', None, dict(emb_dim=128)),
    'emb384':  ('embedding 384 wide', None, dict(emb_dim=384)),
}


def step_ms(net:torch.nn.Module, bf16:bool=True, steps:int=10) -> float:
    "Milliseconds per forward, backward and Adam step of `net` on a batch of 32 × 64 (after 3 untimed)."
    torch.manual_seed(0)
    x, opt = torch.randn(32, 64, 65), torch.optim.Adam(net.parameters())
    for i in range(steps + 3):
        if i == 3: t = time.perf_counter()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16): out = net(x)[0]
        out.float().square().mean().backward()
        opt.step()
        opt.zero_grad()
    return 1000 * (time.perf_counter() - t) / steps


def step_times():
    "The fused LSTM layer's step against `LNLSTM`'s, 2×384 on 65 inputs, in bf16 and fp32: a JSON line each."
    for bf16 in (True, False):
        fused = step_ms(torch.nn.LSTM(65, 384, 2, batch_first=True), bf16)
        ln = step_ms(LNLSTM(65, 384, 2), bf16)
        print(json.dumps(dict(precision='bf16' if bf16 else 'fp32', lstm_ms=round(fused, 1),
                              lnlstm_ms=round(ln, 1), threads=torch.get_num_threads())), flush=True)


def main(a):
    what, patch = TWEAKS[a.tweak][:2]
    change = TWEAKS[a.tweak][2]
    if patch: patch()
    from charrnn.run import train, recipe
    r = recipe(torch.device('cpu'))
    now = {**r['model'], **r['train']}
    assert set(now) - {'time_limit'} <= set(STOP27), f'STOP27 must name every setting of the recipe: {now}'
    if change is None: change = {k: v for k, v in now.items() if k != 'time_limit'}   # 'recipe'
    settings = {**STOP27, 'time_limit': a.seconds, **change}
    t = time.perf_counter()
    learn = train('tinyshakespeare', out=None, device='cpu', quiet=True, seed=a.seed, **settings)
    evals = [(e['step'], round(e['val_loss'], 4)) for e in learn.history.evals]
    print(json.dumps(dict(tweak=a.tweak, change=what, seed=a.seed, steps=learn.step,
                          best=round(learn.best_val, 4), wall_s=round(time.perf_counter() - t, 1),
                          load_after=os.getloadavg()[0], evals=evals)), flush=True)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('tweak', nargs='?', choices=list(TWEAKS), help='what to change (see --list)')
    ap.add_argument('--seed', type=int, default=0, help='the seed the run trains from')
    ap.add_argument('--seconds', type=float, default=180, help='wall time the run trains (time_limit)')
    ap.add_argument('--threads', type=int, default=2, help="torch's threads (the recipe's target: 2)")
    ap.add_argument('--list', action='store_true', help='print every tweak and what it changes')
    ap.add_argument('--step-time', action='store_true', help="time a step of the fused LSTM and of LNLSTM")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.step_time: step_times()
    elif args.list or not args.tweak:
        for k, (what, _, _) in TWEAKS.items(): print(f'{k:8} {what}')
    else: main(args)

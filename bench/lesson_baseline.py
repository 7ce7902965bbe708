"""THE BASELINE, not charrnn: the original lesson's training and sampling, rewritten as a script to time.

Every benchmark that quotes a ratio "against the lesson" runs this file in a subprocess, in the same
invocation, on the same machine. It does what the original lesson does, step for step, and nothing
charrnn adds:

- the text as a Python set of characters, encoded with dicts, whole, into a numpy array;
- batches cut by numpy slicing and one-hot encoded in numpy (float32) on the host at every step;
- an `nn.LSTM` fed the one-hot vectors (input as wide as the vocabulary), dropout, a linear read-out;
- Adam (lr 0.001), cross-entropy, gradient clipping at 5, the hidden state detached with `.data`, a loss read
  (which synchronises) at every step;
- sampling one character at a time: one-hot on the host, a forward pass, softmax, the k most likely, then
  `np.random.choice` among them (top-k 3, as the lesson prints its samples); the prime fed one character
  at a time.

Usage: python bench/lesson_baseline.py [TEXT_FILE] [--steps N] [--gen N] [--gpu] [--no-train]
                                       [--hidden H --layers L --batch B --seq S]
TEXT_FILE defaults to tiny Shakespeare as the charrnn package ships it. Prints one JSON line: ms per
training step (batch 128 x seq 100 by default, 3x512 LSTM) and generated characters per second.
"""
import argparse, json, time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('text', nargs='?', default=None,
                    help='a UTF-8 text file (default: tiny Shakespeare from charrnn)')
    ap.add_argument('--steps', type=int, default=10, help='timed training steps (after 2 untimed ones)')
    ap.add_argument('--gen', type=int, default=300, help='characters to generate, timed')
    ap.add_argument('--gpu', action='store_true')
    ap.add_argument('--hidden', type=int, default=512)
    ap.add_argument('--layers', type=int, default=3)
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--seq', type=int, default=100)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--no-train', action='store_true',
                    help='sample from the untrained model (sampling speed only)')
    return ap.parse_args()


def read_corpus(path):
    "The text to train on: the file given, else the copy of tiny Shakespeare inside the charrnn package."
    if path is None:
        from charrnn.data import get_corpus   # only to find the file: nothing of charrnn runs in the baseline
        path = get_corpus('tinyshakespeare')
    with open(path, encoding='utf8') as f: return f.read()


def one_hot(ids, n_chars):
    "The lesson's host-side one-hot encoding: a float32 numpy array of shape ids.shape + (n_chars,)."
    out = np.zeros((ids.size, n_chars), dtype=np.float32)
    out[np.arange(ids.size), ids.ravel()] = 1.0
    return out.reshape(*ids.shape, n_chars)


def batches(ids, rows, seq):
    "The lesson's batches: the text cut to fit, folded into `rows` rows, `seq` columns at a time."
    usable = (len(ids) // (rows * seq)) * rows * seq
    grid = ids[:usable].reshape(rows, -1)
    for start in range(0, grid.shape[1], seq):
        x = grid[:, start:start + seq]
        y = np.zeros_like(x)
        y[:, :-1] = x[:, 1:]
        end = start + seq
        y[:, -1] = grid[:, end] if end < grid.shape[1] else grid[:, 0]   # the lesson wraps at the end
        yield x, y


class LessonLSTM(nn.Module):
    "The lesson's model: one-hot input straight into nn.LSTM, dropout, a linear layer over the outputs."
    def __init__(self, chars, hidden, layers, dropout=0.5, gpu=False):
        super().__init__()
        self.chars = chars
        self.hidden = hidden
        self.layers = layers
        self.gpu = gpu
        self.itos = dict(enumerate(chars))
        self.stoi = {c: i for i, c in self.itos.items()}
        self.lstm = nn.LSTM(len(chars), hidden, layers, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, len(chars))

    def forward(self, x, state):
        out, state = self.lstm(x, state)
        return self.fc(self.drop(out).contiguous().view(-1, self.hidden)), state

    def zero_state(self, batch):
        z = lambda: torch.zeros(self.layers, batch, self.hidden)
        return (z().cuda(), z().cuda()) if self.gpu else (z(), z())


def train_steps(model, ids, a):
    "`a.steps + 2` training steps the lesson's way; the median time of the last `a.steps`, in seconds."
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    state, times = model.zero_state(a.batch), []
    it = batches(ids, a.batch, a.seq)
    for step in range(a.steps + 2):
        x, y = next(it)
        t0 = time.perf_counter()
        inputs, targets = torch.from_numpy(one_hot(x, len(model.chars))), torch.from_numpy(y)
        if model.gpu: inputs, targets = inputs.cuda(), targets.cuda()
        state = tuple(s.data for s in state)
        model.zero_grad()
        out, state = model(inputs, state)
        loss = loss_fn(out, targets.view(-1).long())
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=5)
        opt.step()
        loss.item()
        if step >= 2: times.append(time.perf_counter() - t0)
    return float(np.median(times))


def next_char(model, char, state, k):
    "The lesson's `predict_next_char`: one step from one character, a numpy draw among the k most likely."
    inputs = torch.from_numpy(one_hot(np.array([[model.stoi[char]]]), len(model.chars)))
    if model.gpu: inputs = inputs.cuda()
    out, state = model(inputs, tuple(s.data for s in state))
    probs = F.softmax(out, dim=1).data
    if model.gpu: probs = probs.cpu()
    probs, idx = probs.topk(k)
    probs = probs.numpy().flatten()
    return model.itos[np.random.choice(idx.numpy().squeeze(), p=probs / probs.sum())], state


def sample(model, size, prime='The', k=3):
    "The lesson's `generate_text`: the prime one character at a time, then `size` characters."
    model.eval()
    out, state = list(prime), model.zero_state(1)
    for c in prime: nxt, state = next_char(model, c, state, k)
    out.append(nxt)
    for _ in range(size):
        nxt, state = next_char(model, out[-1], state, k)
        out.append(nxt)
    return ''.join(out)


def main():
    a = parse_args()
    text = read_corpus(a.text)
    chars = set(text)   # the lesson's vocabulary: a set, in whatever order it iterates
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text])
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    model = LessonLSTM(chars, a.hidden, a.layers, gpu=a.gpu)
    model.stoi, model.itos = stoi, dict(enumerate(chars))
    if a.gpu: model.cuda()
    step_s = None if a.no_train else train_steps(model, ids, a)
    with torch.no_grad():
        sample(model, 20, prime='The ', k=3)            # warm-up
        t0 = time.perf_counter()
        sample(model, a.gen, prime='The ', k=3)
        gen_s = time.perf_counter() - t0
    print(json.dumps({'impl': 'original_lesson', 'device': 'cuda' if a.gpu else 'cpu',
                      'train_ms_per_step': step_s and round(1000 * step_s, 2),
                      'train_chars_per_s': step_s and round(a.batch * a.seq / step_s),
                      'gen_chars_per_s': round(a.gen / gen_s, 1), 'threads': torch.get_num_threads(),
                      'params': sum(p.numel() for p in model.parameters())}))


if __name__ == '__main__':
    main()

"""`charrnn compress` and `charrnn decompress` (issue 22, lesson 08): arithmetic coding driven by a model.

Round trips of texts of 0, 1 and 10,000 characters, through the library and through `charrnn.cli.main`
in-process, with the bundled Shakespeare model and with a tiny model trained here for a few steps on a unicode
text (accents, CJK, an emoji outside the BMP). A compressed file is never decoded into wrong text: every byte
(and every bit) of a small file flipped, every truncation, bytes appended, a forged outer checksum, another
model: each is refused, by the library with `CompressedFileError` and by the command with exit status 2 and
one line on stderr. Bad input to `compress` (characters outside the vocabulary, not UTF-8, OUT existing) too.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_SHAKESPEARE_BYTES, assert_user_error
from charrnn.checkpoint import bundled_model_path
from charrnn.compress import compress_ids, decompress_ids
from charrnn.compressed import (CompressedFileError, MAGIC, VERSION, _PREFIX, coder_model, compress,
                                decompress, read_header)
from charrnn.data import file_sha256
from charrnn.encoding import VocabError
from charrnn.run import train

LINES = ['Élan vital, naïve café: the façade of Zürich.', '日本語のテキストも、文字ごとに。',
         'Snow ☃, a smile 🙂, a euro €.', 'Ωμέγα και άλφα; Привет, мир!',
         'plain ASCII, digits 0123456789, and (brackets) [too].']


def unicode_text(n:int, seed:int=0) -> str:
    "`n` characters of the unicode lines, shuffled."
    rng, out = np.random.default_rng(seed), ''
    while len(out) < n: out += LINES[rng.integers(len(LINES))] + '\n'
    return out[:n]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A 1×32 model (dropout 0.3) trained 6 steps on the unicode text: `(checkpoint path, model, sha256)`."
    d = tmp_path_factory.mktemp('tiny')
    (d/'text.txt').write_text(unicode_text(6_000), encoding='utf-8')
    # dropout > 0: a model left in train mode would code with random probabilities
    train(d/'text.txt', out=d/'run', device='cpu', quiet=True, hidden=32, layers=1, dropout=0.3, batch_size=4,
          seq_len=16, max_steps=6, eval_every=3, precision='fp32', seed=0)
    path = d/'run'/'best.safetensors'
    model, sha = coder_model(path)
    return path, model, sha


@pytest.fixture(scope='module')
def bundled():
    "The bundled model as the coder reads it, and its file's sha256."
    return coder_model('bundled')


def shakespeare(n:int) -> str:
    "The first `n` characters of tiny Shakespeare's validation split (the last 10%)."
    text = TINY_SHAKESPEARE_BYTES.decode()
    return text[len(text) - round(len(text) * 0.1):][:n]


# ------------------------------------------------------------------ round trips

@pytest.mark.parametrize('n', [0, 1, 10_000])
def test_round_trip_library_unicode(tiny, n):
    model, sha = tiny[1:]
    text = unicode_text(n, seed=n)
    data = compress(model, text, sha)
    assert decompress(model, data, sha) == text
    assert read_header(data)['chars'] == n and read_header(data)['model_sha256'] == sha
    if n == 10_000:
        assert '🙂' in text and '日' in text and 'é' in text  # the unicode is there
        assert read_header(data)['streams'] == 10  # one per 1,000 characters by default


@pytest.mark.parametrize('n', [0, 1, 10_000])
def test_round_trip_library_bundled(bundled, n):
    model, sha = bundled
    text = shakespeare(n)
    data = compress(model, text, sha)
    assert decompress(model, data, sha) == text
    if n == 10_000: assert 8 * len(data) / n < 2.6  # well under what xz makes of the validation split (2.95)


@pytest.mark.parametrize('n', [0, 1, 10_000])
def test_round_trip_cli(tiny, cli, tmp_path, n):
    ckpt, *_ = tiny
    raw = unicode_text(n, seed=n + 1).encode('utf-8')
    (tmp_path/'in.txt').write_bytes(raw)
    r = cli('compress', ckpt, tmp_path/'in.txt', tmp_path/'in.crz')
    assert r.returncode == 0 and r.stderr == '' and 'bits/char' in r.stdout, r
    r = cli('decompress', ckpt.parent, tmp_path/'in.crz', tmp_path/'back.txt')  # the run folder
    assert r.returncode == 0 and r.stderr == '', r
    assert (tmp_path/'back.txt').read_bytes() == raw
    assert sorted(p.name for p in tmp_path.iterdir()) == ['back.txt', 'in.crz', 'in.txt']  # no .tmp left


def test_round_trip_cli_bundled_streams(cli, tmp_path):
    raw = shakespeare(3_000).encode()
    (tmp_path/'in.txt').write_bytes(raw)
    r = cli('compress', 'bundled', tmp_path/'in.txt', tmp_path/'in.crz', '--streams', 5)
    assert r.returncode == 0, r
    assert read_header((tmp_path/'in.crz').read_bytes())['streams'] == 5
    assert cli('decompress', 'bundled', tmp_path/'in.crz', tmp_path/'back.txt').returncode == 0
    assert (tmp_path/'back.txt').read_bytes() == raw


def test_empty_file_round_trips_as_a_header(tiny, cli, tmp_path):
    ckpt, *_ = tiny
    (tmp_path/'empty.txt').write_bytes(b'')
    assert cli('compress', ckpt, tmp_path/'empty.txt', tmp_path/'e.crz').returncode == 0
    data = (tmp_path/'e.crz').read_bytes()
    assert data.startswith(MAGIC) and read_header(data)['chars'] == 0 and read_header(data)['code'] == b''
    assert cli('decompress', ckpt, tmp_path/'e.crz', tmp_path/'back.txt').returncode == 0
    assert (tmp_path/'back.txt').read_bytes() == b''


def test_deterministic_and_leaves_the_model_and_threads_alone(tiny):
    model, sha = tiny[1:]
    text, threads = unicode_text(2_000, seed=3), torch.get_num_threads()
    a = compress(model, text, sha)
    model.train()  # dropout on: the coder must still use the model in eval mode, on a copy
    try:
        assert compress(model, text, sha) == a
        assert model.training
    finally: model.eval()
    assert torch.get_num_threads() == threads
    ids = model.vocab.encode(text).long().numpy()
    for streams in (1, 7, 2_000, 5_000):  # one; uneven; one character each; more streams than characters
        assert (decompress_ids(model, compress_ids(model, ids, streams), len(ids), streams) == ids).all()


# ------------------------------------------------------------------ damage is always caught

@pytest.fixture(scope='module')
def small_file(tiny):
    "A compressed file of 40 characters, and the text."
    model, sha = tiny[1:]
    text = unicode_text(40, seed=9)
    return compress(model, text, sha), text


def test_every_byte_and_bit_flipped_is_caught(tiny, small_file):
    model, sha = tiny[1:]
    data, text = small_file
    assert decompress(model, data, sha) == text
    for i in range(len(data)):
        for mask in (0xFF, *(1 << k for k in range(8))):
            bad = data[:i] + bytes([data[i] ^ mask]) + data[i + 1:]
            with pytest.raises(CompressedFileError):
                decompress(model, bad, sha)


def test_every_byte_flipped_is_caught_by_the_command(tiny, small_file, cli, tmp_path):
    ckpt, *_ = tiny
    data, _ = small_file
    for i in range(len(data)):
        (tmp_path/'bad.crz').write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
        r = cli('decompress', ckpt, tmp_path/'bad.crz', tmp_path/'out.txt')
        assert_user_error(r, 'decompress', 'bad.crz')
        assert not (tmp_path/'out.txt').exists()


def test_truncated_or_appended_is_caught(tiny, small_file, cli, tmp_path):
    ckpt = tiny[0]
    model, sha = tiny[1:]
    data, _ = small_file
    for n in range(len(data)):
        with pytest.raises(CompressedFileError):
            decompress(model, data[:n], sha)
    with pytest.raises(CompressedFileError, match='bytes more than its header says'):
        decompress(model, data + b'\0', sha)
    (tmp_path/'cut.crz').write_bytes(data[:-5])
    r = cli('decompress', ckpt, tmp_path/'cut.crz', tmp_path/'o.txt')
    assert_user_error(r, 'decompress', 'truncated')
    (tmp_path/'empty.crz').write_bytes(b'')
    r = cli('decompress', ckpt, tmp_path/'empty.crz', tmp_path/'o.txt')
    assert_user_error(r, 'decompress', 'is empty')
    (tmp_path/'notes.txt').write_text('not compressed')
    assert_user_error(cli('decompress', ckpt, tmp_path/'notes.txt', tmp_path/'o.txt'), 'decompress',
                      'not a file written by charrnn compress')
    assert not (tmp_path/'o.txt').exists()


def forge(data:bytes, pos:int) -> bytes:
    "`data` with a bit of its code flipped `pos` bytes from the end, and its outer checksum forged to match."
    body = bytearray(data[_PREFIX.size:])
    body[-pos] ^= 0x10
    return _PREFIX.pack(MAGIC, VERSION, len(data), zlib.crc32(bytes(body))) + bytes(body)


def test_forged_checksum_is_caught_by_the_text_checksum(bundled):
    """The second line of defence: a code that decodes into other text fails the text's CRC-32.
    (A flip in the last few bits may leave the text as it was: the final bits only pin a number inside the
    last interval, with room to spare. Then the right text comes back, which is fine.)"""
    model, sha = bundled
    text = shakespeare(500)
    data = compress(model, text, sha, streams=4)
    n, caught = len(read_header(data)['code']), 0
    for pos in range(1, n + 1, 7):
        try: assert decompress(model, forge(data, pos), sha) == text, f'wrong text (flip {pos} from the end)'
        except CompressedFileError as e:
            assert 'fails its checksum' in str(e)
            caught += 1
    assert caught >= len(range(1, n + 1, 7)) - 1, caught


def test_wrong_model_is_refused(tiny, bundled, cli, tmp_path):
    ckpt, *_ = tiny
    model, sha = bundled
    (tmp_path/'x.crz').write_bytes(compress(model, shakespeare(100), sha))
    assert sha == file_sha256(bundled_model_path())
    r = cli('decompress', ckpt, tmp_path/'x.crz', tmp_path/'x.txt')
    line = assert_user_error(r, 'decompress', 'another model', sha[:12], 'checkpoint that compressed it')
    assert not (tmp_path/'x.txt').exists(), line
    with pytest.raises(CompressedFileError, match='another model'):
        decompress(model, compress(model, 'a', '1' * 64), sha)


# ------------------------------------------------------------------ bad input to compress

def test_characters_outside_the_vocabulary(cli, tmp_path, bundled):
    (tmp_path/'snow.txt').write_text('First Citizen: café ☃\r\n', encoding='utf-8')
    r = cli('compress', 'bundled', tmp_path/'snow.txt', tmp_path/'snow.crz')
    assert_user_error(r, 'compress', 'snow.txt', "'é' (U+00E9)", 'U+2603', 'U+000D', 'vocabulary')
    assert not (tmp_path/'snow.crz').exists()
    with pytest.raises(VocabError, match=r'U\+00E9'): compress(bundled[0], 'café', bundled[1])


def test_not_utf8_missing_and_bad_streams(cli, tmp_path):
    (tmp_path/'latin1.txt').write_bytes('First café'.encode('latin-1'))
    (tmp_path/'ok.txt').write_text('First')
    cases = [(['bundled', 'latin1.txt'], ['not UTF-8', 'offset 9']),
             (['bundled', 'nowhere.txt'], ['nowhere.txt']),
             (['bundled', 'ok.txt', '--streams', 0], ['--streams']),
             ([tmp_path/'no_model', 'ok.txt'], ['no_model'])]
    for args, needles in cases:   # the model, the text, then any flags
        r = cli('compress', args[0], tmp_path/args[1], tmp_path/'o.crz', *args[2:])
        assert_user_error(r, 'compress', *needles)
    assert not (tmp_path/'o.crz').exists()


def test_out_existing_is_refused_without_force(tiny, cli, tmp_path):
    ckpt, *_ = tiny
    (tmp_path/'in.txt').write_text(unicode_text(300), encoding='utf-8')
    (tmp_path/'in.crz').write_bytes(b'precious')
    r = cli('compress', ckpt, tmp_path/'in.txt', tmp_path/'in.crz')
    assert_user_error(r, 'compress', 'already exists', '--force')
    assert (tmp_path/'in.crz').read_bytes() == b'precious'
    assert cli('compress', ckpt, tmp_path/'in.txt', tmp_path/'in.crz', '--force').returncode == 0
    (tmp_path/'back.txt').write_bytes(b'precious too')
    r = cli('decompress', ckpt, tmp_path/'in.crz', tmp_path/'back.txt')
    assert_user_error(r, 'decompress', 'already exists')
    assert (tmp_path/'back.txt').read_bytes() == b'precious too'
    assert cli('decompress', ckpt, tmp_path/'in.crz', tmp_path/'back.txt', '--force').returncode == 0
    assert (tmp_path/'back.txt').read_bytes() == (tmp_path/'in.txt').read_bytes()
    r = cli('compress', ckpt, tmp_path/'in.txt', tmp_path/'in.txt', '--force')
    assert_user_error(r, 'compress', 'input file itself')
    assert_user_error(cli('compress', ckpt, tmp_path/'in.txt', tmp_path), 'compress', 'is a folder')

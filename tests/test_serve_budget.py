"""The server's limits under load: the shared decode budget (503 + Retry-After past it), request bodies cut
as they stream (chunked or lying about their length) without spooling the rest, and an index whose vectors
do not fit refused at open / serve start with one line."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from PIL import Image

from test_api import tiny_net
from test_serve import make_index, png_bytes, running_server

MB = 1024 * 1024


@pytest.fixture(scope="module")
def model_and_index(tmp_path_factory):
    from locktune.api import LitModel

    model = LitModel(tiny_net())
    return model, make_index(tmp_path_factory.mktemp("budget"), model)


# --- the decode budget on its own -------------------------------------------------------------------------

def test_budget_admits_up_to_both_limits_and_refuses_past_either():
    from locktune.serve.budget import DecodeBudget, ServerBusy

    budget = DecodeBudget(max_decodes=2, max_megapixels=80, wait_s=0)
    with budget.claim(50_000_000):
        with budget.claim(30_000_000):  # 80 MP together: exactly the limit
            assert (budget.decodes, budget.pixels) == (2, 80_000_000)
            with pytest.raises(ServerBusy):  # a third decode, however small
                with budget.claim(1):
                    pass
        assert (budget.decodes, budget.pixels) == (1, 50_000_000)
        with pytest.raises(ServerBusy) as busy:  # 50 + 31 > 80 megapixels, though only one decode runs
            with budget.claim(31_000_000):
                pass
        with budget.claim(30_000_000):
            pass
    assert (budget.decodes, budget.pixels, budget.refused, budget.peak_pixels) == (0, 0, 2, 80_000_000)
    assert busy.value.status == 503 and busy.value.headers == {"Retry-After": "1"}
    assert "retry in 1 s" in busy.value.message and "50 of 80 megapixels" in busy.value.message
    with pytest.raises(ValueError):  # can never fit: the server refuses such an image as too large instead
        with budget.claim(80_000_001):
            pass


def test_a_claim_that_does_not_fit_waits_for_one_to_finish():
    from locktune.serve.budget import DecodeBudget

    budget = DecodeBudget(max_decodes=1, max_megapixels=10, wait_s=60)
    admitted = []

    def waiter():
        with budget.claim(7):
            admitted.append(budget.pixels)
    with budget.claim(5):
        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(0.3)
        assert admitted == [] and thread.is_alive()  # cannot be admitted while the first claim is held
    thread.join()
    assert admitted == [7] and budget.refused == 0 and budget.pixels == 0


# --- the budget in the server -----------------------------------------------------------------------------

def test_an_upload_past_the_budget_gets_503_with_retry_after_then_succeeds(model_and_index):
    import httpx

    from locktune.serve.app import create_app

    model, index = model_and_index
    app = create_app(model, index, max_decodes=1, decode_wait_s=0)
    upload = {"image": ("red.png", png_bytes(Image.new("RGB", (40, 30), (255, 0, 0))), "image/png")}
    budget = app.state.decode_budget
    with running_server(app) as url:
        with budget.claim(1):  # another decode in flight
            busy = httpx.post(f"{url}/api/classify", data={"labels": "red, blue"}, files=upload, timeout=30)
            info = httpx.get(f"{url}/api/info").json()["limits"]["decodes"]
        after = httpx.post(f"{url}/api/classify", data={"labels": "red, blue"}, files=upload, timeout=30)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "retry in 1 s" in busy.json()["error"] and "1 other image" in busy.json()["error"]
    assert info == {"max_decodes": 1, "max_megapixels": 80.0, "wait_s": 0.0, "decoding": 1, "refused": 1}
    assert after.status_code == 200, after.text
    assert (budget.decodes, budget.pixels, budget.peak_pixels) == (0, 0, 40 * 30)


def test_an_upload_larger_than_the_whole_budget_is_413_not_503_forever(model_and_index):
    import httpx

    from locktune.serve.app import create_app

    model, index = model_and_index
    with running_server(create_app(model, index, max_decode_megapixels=1.0)) as url:
        r = httpx.post(f"{url}/api/classify", data={"labels": "a"}, timeout=30,
                       files={"image": ("big.png", png_bytes(Image.new("L", (1100, 1000), 9)), "image/png")})
    assert r.status_code == 413 and "1100x1000 pixels; the limit is 1 megapixels" in r.json()["error"], r.text


# --- bodies cut as they stream ----------------------------------------------------------------------------

def _multipart_head(boundary: bytes) -> bytes:
    return (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="labels"\r\n\r\na, b\r\n--' + boundary +
            b'\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")


def _call_asgi(app, headers: list[tuple[bytes, bytes]], chunks):
    """Run one POST /api/classify through the ASGI app in-process; the body comes from `chunks` (an endless
    iterator is fine).  -> (status, JSON body, bytes the app pulled from the client)."""
    pulled = 0
    sent = []

    async def receive():
        nonlocal pulled
        chunk = next(chunks)
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/classify", "raw_path": b"/api/classify", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


def _endless_upload(boundary: bytes):
    yield _multipart_head(boundary)
    block = b"\x89PNG" + b"\0" * (MB - 4)
    while True:
        yield block


@pytest.mark.parametrize("declared", [None, b"1000"], ids=["chunked", "lying-content-length"])
def test_an_endless_body_is_cut_at_the_limit_and_its_temp_file_removed(model_and_index, tmp_path, monkeypatch,
                                                                         declared):
    """No Content-Length (chunked), or one that claims 1000 bytes: the body is counted as it arrives and cut
    one chunk past the limit; the multipart parser's spooled file is gone afterwards."""
    import tempfile

    from locktune.serve.app import BODY_SLACK_BYTES, create_app
    from locktune.serve.uploads import MAX_UPLOAD_BYTES

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where Starlette spools uploads over 1 MB
    model, index = model_and_index
    boundary = b"locktuneboundary"
    headers = [(b"content-type", b"multipart/form-data; boundary=" + boundary)]
    headers += [(b"content-length", declared)] if declared else [(b"transfer-encoding", b"chunked")]
    import starlette.formparsers

    from locktune.serve.body_limit import DRAIN_BYTES

    opened, written = [], []

    class CountingSpool(tempfile.SpooledTemporaryFile):
        def write(self, data):
            written.append(len(data))
            return super().write(data)

    def counting_spool(*args, **kwargs):
        opened.append(CountingSpool(*args, **kwargs))
        return opened[-1]
    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", counting_spool)
    status, body, pulled = _call_asgi(create_app(model, index), headers, _endless_upload(boundary))
    limit = MAX_UPLOAD_BYTES + BODY_SLACK_BYTES
    assert status == 413 and "was cut there" in body["error"] and "limited to 10 MB" in body["error"]
    # What reached the upload's file: under the limit (the image part starts after the form's head).
    assert MAX_UPLOAD_BYTES - 2 * MB < sum(written) <= limit
    # Read from the client: up to the cut, then discarded up to the drain bound (so a client that stops
    # sending in time reads its 413), never the endless rest.
    assert limit < pulled <= limit + MB + DRAIN_BYTES + MB
    assert len(opened) == 1 and opened[0].closed  # spooled up to the cut, then closed (and so deleted)
    assert list(tmp_path.iterdir()) == []


def test_a_chunked_oversize_upload_over_http_gets_413_and_the_server_stays_up(model_and_index):
    import httpx

    from locktune.serve.app import create_app

    model, index = model_and_index
    sent = 0

    def chunks():
        nonlocal sent
        boundary = b"locktuneboundary"
        for piece in _endless_upload(boundary):
            sent += len(piece)
            if sent > 64 * MB:  # a client that would go on: the server must answer long before this
                return
            yield piece
    with running_server(create_app(model, index)) as url:
        r = httpx.post(f"{url}/api/classify", content=chunks(), timeout=60,
                       headers={"content-type": "multipart/form-data; boundary=locktuneboundary"})
        assert httpx.get(f"{url}/api/info").status_code == 200
    assert r.status_code == 413 and "was cut there" in r.json()["error"], r.text


# --- an index whose vectors do not fit --------------------------------------------------------------------

def test_an_index_with_vectors_of_another_width_or_truncated_is_refused_with_one_line(model_and_index, tmp_path):
    from locktune.api import LitModel
    from locktune.errors import LocktuneError
    from locktune.index.store import ImageIndex
    from locktune.serve.app import create_app

    model, _ = model_and_index
    index = make_index(tmp_path, model)
    folder = index.folder
    dim, rows = model.embed_dim, len(index)
    good = np.load(folder / "embeddings.npy")
    assert good.shape == (rows, dim)

    np.save(folder / "embeddings.npy", np.zeros((rows, dim + 3), np.float32))  # another width
    with pytest.raises(LocktuneError) as wide:
        ImageIndex.load(folder)
    np.save(folder / "embeddings.npy", good[:-1])  # a row short
    with pytest.raises(LocktuneError) as short:
        ImageIndex.load(folder)
    np.save(folder / "embeddings.npy", good)
    data = (folder / "embeddings.npy").read_bytes()
    (folder / "embeddings.npy").write_bytes(data[:len(data) - 40])  # cut off mid-row: a truncated copy
    with pytest.raises(LocktuneError) as truncated:
        ImageIndex.load(folder)
    for caught in (wide, short, truncated):
        message = str(caught.value)
        assert "\n" not in message and "embeddings.npy" in message and "locktune index" in message, message
        assert f"({rows}, {dim})" in message, message
    assert f"shape ({rows}, {dim + 3})" in str(wide.value) and f"shape ({rows - 1}, {dim})" in str(short.value)
    assert "truncated" in str(truncated.value)

    # A consistent index of another width (index.json agrees with the file) still does not fit this model:
    # refused when the server is made, before it starts.
    np.save(folder / "embeddings.npy", np.zeros((rows, dim * 2), np.float32))
    np.save(folder / "labels.npy", np.zeros((len(index.labels), dim * 2), np.float32))
    meta = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**meta, "dim": dim * 2}))
    other = ImageIndex.load(folder)
    with pytest.raises(LocktuneError) as refused:
        create_app(LitModel(model.net), other)
    message = str(refused.value)
    assert "\n" not in message and "embeddings.npy" in message and "locktune index" in message
    assert f"shape ({rows}, {dim * 2})" in message and f"needs ({rows}, {dim})" in message
    with pytest.raises(LocktuneError, match=r"expected \(\d+, 7\)"):
        ImageIndex.load(folder, embed_dim=7)


def test_serve_options_reach_the_decode_budget():
    import argparse

    from locktune.cli_use import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", "m", "--max-decodes", "3", "--max-decode-megapixels", "12.5"])
    assert (args.max_decodes, args.max_decode_megapixels) == (3, 12.5)
    defaults = parser.parse_args(["serve", "--model", "m"])
    from locktune.serve.budget import MAX_DECODE_MEGAPIXELS, MAX_DECODES

    assert (defaults.max_decodes, defaults.max_decode_megapixels) == (MAX_DECODES, MAX_DECODE_MEGAPIXELS)


def _resident() -> int:
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_a_large_decode_gives_its_freed_memory_back_whatever_thread_ran_it(model_and_index):
    """Each worker thread's malloc arena kept a 36 MP decode's freed pages, so resident memory grew with the
    threads that had decoded (0.44 GB after one, 0.91 GB after four on four threads, measured).  With
    `give_back_freed_memory` after each, four decodes on four threads leave it where one left it."""
    import io

    from locktune.serve.freed_memory import TRIM_AFTER_PIXELS, _malloc_trim, give_back_freed_memory
    from locktune.serve.uploads import MAX_PIXELS, read_image

    if _malloc_trim() is None:
        pytest.skip("not glibc: nothing to give back through malloc_trim")
    model = model_and_index[0]
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000), (200, 40, 40)).save(buffer, "PNG")
    png = buffer.getvalue()

    def decode():
        model.encode_image(read_image(png, MAX_PIXELS))
        assert give_back_freed_memory(6000 * 6000)

    decode()
    after_one = _resident()
    for _ in range(4):
        worker = threading.Thread(target=decode)
        worker.start()
        worker.join()
    assert _resident() < after_one + 150e6, f"{(_resident() - after_one) / 1e6:.0f} MB kept after four threads"
    assert not give_back_freed_memory(TRIM_AFTER_PIXELS - 1)  # a small upload is not worth a trim


def test_without_glibc_nothing_is_trimmed(monkeypatch):
    from locktune.serve import freed_memory

    monkeypatch.setattr(freed_memory, "_malloc_trim", lambda: None)
    assert not freed_memory.give_back_freed_memory(36_000_000)

import gzip
import operator
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from unittest import mock

import brotli
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from mitmproxy.net import encoding as mitmproxy_encoding

from claimgate import decoding
from claimgate.decoding import BodyTooLarge, UndecodableBody, decode

if sys.version_info >= (3, 14):  # pragma: no cover
    from compression import zstd
else:
    from backports import zstd

MIB = 1 << 20
LIMIT = 4 * MIB
"""The default ``proxy.max_body_size``."""
SECRET = b"SECRET-claim-token"


def raw_deflate(body: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


def mitmproxy_encoder(coding: str) -> Callable[[bytes], bytes]:
    return lambda body: mitmproxy_encoding.encode(body, coding)


# (label, Content-Encoding, encoder, the coding mitmproxy decodes it as)
CODINGS = [
    ("identity", "identity", lambda body: body, "identity"),
    ("gzip", "gzip", mitmproxy_encoder("gzip"), "gzip"),
    ("x-gzip", "x-gzip", gzip.compress, "gzip"),
    ("deflate", "deflate", mitmproxy_encoder("deflate"), "deflate"),
    ("raw deflate", "deflate", raw_deflate, "deflate"),
    ("br", "br", mitmproxy_encoder("br"), "br"),
    ("zstd", "zstd", mitmproxy_encoder("zstd"), "zstd"),
]
COMPRESSED = [c for c in CODINGS if c[0] != "identity"]
LABELS = [c[0] for c in COMPRESSED]

bodies = st.one_of(
    st.binary(max_size=2000),  # incompressible
    st.builds(operator.mul, st.binary(min_size=1, max_size=8), st.integers(0, 2500)),
)
steps = st.integers(1, 64)


def small_steps(input_step: int, output_step: int) -> AbstractContextManager[Any]:
    """Steps of a few bytes, so that every body crosses many step boundaries."""
    return mock.patch.multiple(decoding, _INPUT_STEP=input_step, _OUTPUT_STEP=output_step)


@given(
    body=bodies,
    coding=st.sampled_from(CODINGS),
    slack=st.integers(-2, 2),
    input_step=steps,
    output_step=steps,
)
def test_a_body_decodes_as_mitmproxy_decodes_it_up_to_the_limit(
    body, coding, slack, input_step, output_step
):
    _, content_encoding, encode, mitmproxy_coding = coding
    encoded = encode(body)
    limit = max(0, len(body) + slack)
    with small_steps(input_step, output_step):
        if len(body) > limit:
            with pytest.raises(BodyTooLarge):
                decode(encoded, content_encoding, limit)
        else:
            decoded = decode(encoded, content_encoding, limit)
            assert decoded == body == mitmproxy_encoding.decode(encoded, mitmproxy_coding)


@pytest.mark.parametrize("coding", CODINGS, ids=[c[0] for c in CODINGS])
def test_a_body_of_exactly_the_limit_passes_and_one_byte_more_does_not(coding):
    _, content_encoding, encode, _ = coding
    body = (b"claimgate" * LIMIT)[:LIMIT]
    assert decode(encode(body), content_encoding, LIMIT) == body
    with pytest.raises(BodyTooLarge, match=f"larger than {LIMIT - 1} bytes"):
        decode(encode(body), content_encoding, LIMIT - 1)


@pytest.mark.parametrize("content_encoding", [None, "", "identity", " Identity ", "none"])
def test_identity_is_the_very_same_object(content_encoding):
    body = b'{"token": "t"}'
    assert decode(body, content_encoding, LIMIT) is body


@pytest.mark.parametrize("content_encoding", ["GZip", " gzip\t", "X-GZIP"])
def test_coding_names_ignore_case_and_surrounding_space(content_encoding):
    assert decode(gzip.compress(SECRET), content_encoding, LIMIT) == SECRET


def test_an_empty_body_is_empty_in_every_coding():
    for _, content_encoding, _, _ in CODINGS:
        assert decode(b"", content_encoding, 0) == b""


@pytest.mark.parametrize("content_encoding", ["compress", "bz2", "base64", "utf-8", "gzip, br"])
def test_an_unknown_coding_is_undecodable(content_encoding):
    """mitmproxy falls back to Python's codecs (``bz2``, ``base64``): not HTTP codings here."""
    with pytest.raises(UndecodableBody, match="unknown content encoding"):
        decode(b"QlpoOTFBWSZTWQ==", content_encoding, LIMIT)


def test_gzip_members_and_their_nul_padding_are_one_body():
    """As ``gzip.decompress`` reads them (mitmproxy keeps only the first member)."""
    body = gzip.compress(b"first ") + gzip.compress(b"") + b"\0" * 3 + gzip.compress(SECRET)
    assert decode(body, "gzip", LIMIT) == gzip.decompress(body) == b"first " + SECRET
    with pytest.raises(BodyTooLarge):
        decode(body, "gzip", len(b"first " + SECRET) - 1)


def test_gzip_members_past_sixteen_are_undecodable():
    """Each member costs a decompressor: a body of thousands of empty ones is refused."""
    assert decode(gzip.compress(b"a") * 16, "gzip", LIMIT) == b"a" * 16
    assert_undecodable(gzip.compress(b"") * 200_000, "gzip", secret=None)


def test_gzip_takes_a_zlib_stream_as_mitmproxy_detects_it():
    assert decode(zlib.compress(SECRET), "gzip", LIMIT) == SECRET


def assert_undecodable(
    encoded: bytes, content_encoding: str, secret: bytes | None = SECRET
) -> None:
    """Undecodable, and neither the error nor its cause quotes ``secret`` from the body."""
    with pytest.raises(UndecodableBody) as caught:
        decode(encoded, content_encoding, LIMIT)
    error: BaseException | None = caught.value
    while error is not None and secret is not None:
        assert secret.decode("latin-1") not in str(error)
        assert repr(secret)[2:-1] not in repr(error)
        error = error.__cause__


@pytest.mark.parametrize("coding", COMPRESSED, ids=LABELS)
def test_data_not_in_the_coding_is_undecodable(coding):
    assert_undecodable(b"not compressed at all: " + SECRET, coding[1])


@pytest.mark.parametrize("input_step", [1, decoding._INPUT_STEP])
@pytest.mark.parametrize("coding", COMPRESSED, ids=LABELS)
def test_bytes_after_the_end_of_the_stream_are_undecodable(coding, input_step):
    _, content_encoding, encode, _ = coding
    with small_steps(input_step, decoding._OUTPUT_STEP):
        assert_undecodable(encode(b"body") + SECRET, content_encoding)


@given(body=bodies, coding=st.sampled_from(COMPRESSED), cut=st.floats(0, 1, exclude_max=True))
def test_a_truncated_stream_is_undecodable(body, coding, cut):
    _, content_encoding, encode, _ = coding
    encoded = encode(body)
    assume(len(encoded) > 1)  # brotli's empty body is one byte: no shorter stream to cut
    truncated = encoded[: 1 + int((len(encoded) - 1) * cut)]
    assert_undecodable(truncated, content_encoding, truncated[:8] if len(truncated) > 3 else None)


@given(frames=st.lists(bodies, min_size=1, max_size=4), input_step=steps, output_step=steps)
def test_zstd_frames_are_one_body(frames, input_step, output_step):
    """As ``zstd.decompress`` (mitmproxy's) reads them; a skippable frame decodes to nothing."""
    skippable = struct.pack("<II", 0x184D2A50, 3) + b"abc"
    encoded = skippable.join(zstd.compress(frame) for frame in frames)
    with small_steps(input_step, output_step):
        assert decode(encoded, "zstd", LIMIT) == zstd.decompress(encoded) == b"".join(frames)


def test_a_zstd_frame_needing_a_window_over_8_mib_is_undecodable():
    """RFC 9659: encoders must not need more than 8 MiB for HTTP; decoders need not take it."""
    for window_log, accepted in ((23, True), (24, False)):
        compressor = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: window_log})
        frame = compressor.compress(SECRET) + compressor.flush()  # no content size: full window
        if accepted:
            assert decode(frame, "zstd", LIMIT) == SECRET
        else:
            assert_undecodable(frame, "zstd")


# --- bombs: 1 GiB of zeros ----------------------------------------------------------------

GIB_IN_MIB = 1024
GZIP_HEADER = b"\x1f\x8b\x08\x00\0\0\0\0\x02\xff"  # deflate, no flags, no mtime, best, unknown OS


def zeros_deflated(mib: int) -> tuple[bytes, bytes, bytes]:
    """``mib`` MiB of zeros as raw deflate, zlib and gzip, compressing only three 1 MiB blocks.

    A full flush resets the compressor, so every block after it compresses to the same bytes.
    """
    block = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    middle = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    last = compressor.compress(block) + compressor.flush()
    raw = first + middle * (mib - 2) + last
    size = mib * MIB
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    adler = (size % 65521) << 16 | 1  # over zeros, Adler-32's A stays 1 and B adds it per byte
    gzipped = GZIP_HEADER + raw + struct.pack("<II", crc, size & 0xFFFFFFFF)
    return raw, b"\x78\xda" + raw + struct.pack(">I", adler), gzipped


def zeros_streamed(process: Callable[[bytes], bytes], finish: Callable[[], bytes]) -> bytes:
    block = bytes(MIB)
    return b"".join([process(block) for _ in range(GIB_IN_MIB)] + [finish()])


def test_the_deflate_bombs_are_sound():
    raw, zlibbed, gzipped = zeros_deflated(3)
    zeros = bytes(3 * MIB)
    assert zlib.decompress(raw, -zlib.MAX_WBITS) == zlib.decompress(zlibbed) == zeros
    assert gzip.decompress(gzipped) == zeros


# label: (Content-Encoding, the decoder's own window, which the format bounds)
BOMB_WINDOWS = {
    "gzip": ("gzip", 1 << 15),
    "deflate": ("deflate", 1 << 15),
    "raw deflate": ("deflate", 1 << 15),
    "br": ("br", 1 << 24),  # the largest brotli window; the decoder fills its ring buffer
    "zstd": ("zstd", 1 << 23),  # the largest window RFC 9659 (and decode) allows
}


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    raw, zlibbed, gzipped = zeros_deflated(GIB_IN_MIB)
    br = brotli.Compressor(quality=1, lgwin=24)
    zs = zstd.ZstdCompressor(
        options={
            zstd.CompressionParameter.compression_level: 1,
            zstd.CompressionParameter.window_log: 23,
        }
    )
    return {
        "gzip": gzipped,
        "deflate": zlibbed,
        "raw deflate": raw,
        "br": zeros_streamed(br.process, br.finish),
        "zstd": zeros_streamed(zs.compress, zs.flush),
    }


@pytest.mark.parametrize("label", BOMB_WINDOWS)
def test_a_bomb_is_too_large_and_its_decoding_allocates_little(bombs, label):
    """tracemalloc sees the output buffers, not what brotli or zstd allocate inside."""
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            decode(bombs[label], BOMB_WINDOWS[label][0], LIMIT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * LIMIT


CHILD = """
import sys
from claimgate.decoding import BodyTooLarge, decode

def kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))

content_encoding, path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "rb") as bomb:
    data = bomb.read()
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak (VmHWM) starts again from what is resident now
before = kib("VmRSS:")
try:
    decode(data, content_encoding, limit)
except BodyTooLarge:
    print((kib("VmHWM:") - before) * 1024)
"""


@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable VmHWM"
)
@pytest.mark.parametrize("label", BOMB_WINDOWS)
def test_a_bomb_grows_the_process_by_little(bombs, label, tmp_path: Path):
    """What the process holds at its peak, C libraries included: the kept output (at most the
    limit), the decoder's window, and twice the limit again for the allocator's slack."""
    content_encoding, window = BOMB_WINDOWS[label]
    path = tmp_path / "bomb"
    path.write_bytes(bombs[label])
    child = subprocess.run(
        [sys.executable, "-c", CHILD, content_encoding, str(path), str(LIMIT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert int(child.stdout) < 3 * LIMIT + window

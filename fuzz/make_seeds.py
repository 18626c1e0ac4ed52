#!/usr/bin/env python3
"""Seed inputs for the fuzz targets (standard library only).

    fuzz/make_seeds.py OUT_DIR [PSI_GPU_BINARY]

writes OUT_DIR/{npy,bmp,png,safetensors}/: the small committed fixtures of tests/fixtures,
hand-made valid files of every supported variant and edge cases around them, and — with the
psi-gpu binary — BMP and PNG bucket images written by the crate's own writers (`convert`).
The committed corpus (fuzz/corpus/) was grown from these and minimised with `cargo fuzz cmin`.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SMALL = 20_000  # fixtures up to this many bytes are copied


def npy(dict_text, data=b"", major=1, raw_header=None):
    """A .npy file: `dict_text` padded as numpy pads it (64-byte aligned data)."""
    header = raw_header if raw_header is not None else dict_text.encode("latin-1" if major < 3 else "utf-8")
    len_size = 2 if major == 1 else 4
    pad = (64 - (8 + len_size + len(header) + 1) % 64) % 64
    header = header + b" " * pad + b"\n"
    length = struct.pack("<H" if major == 1 else "<I", len(header))
    return b"\x93NUMPY" + bytes([major, 0]) + length + header + data


def npy_dict(descr, shape, fortran="False"):
    return "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)


def npy_seeds():
    out = {}
    for descr, size in [("|u1", 1), ("<u2", 2), ("<f2", 2), ("<f4", 4)]:
        for major in (1, 2, 3):
            out[f"{descr[1:]}_v{major}"] = npy(npy_dict(descr, "(2, 3, 4)"), bytes(range(24 * size)), major)
    out["scalar"] = npy(npy_dict("<f4", "()"), b"\0\0\x80\x3f")
    out["one_d"] = npy(npy_dict("<u2", "(5,)"), bytes(10))
    out["empty"] = npy(npy_dict("<f4", "(0, 3)"))
    out["paren"] = npy(npy_dict("<f4", "(5)"), bytes(20))
    out["long_suffix"] = npy(npy_dict("|u1", "(3L, 2L)"), bytes(6))
    out["loose"] = npy('{"shape":(2,3) ,"fortran_order":False,"descr":"<f4"}', bytes(24))
    out["fortran"] = npy(npy_dict("<f4", "(2, 2)", "True"), bytes(16))
    out["big_endian"] = npy(npy_dict(">f4", "(2,)"), bytes(8))
    out["f8"] = npy(npy_dict("<f8", "(2,)"), bytes(16))
    out["structured"] = npy("{'descr': [('a', '<f4'), ('b', [('c', '|u1')])], 'fortran_order': False, 'shape': (1,), }", bytes(5))
    out["none"] = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': None}", bytes(4))
    out["latin1"] = npy("", bytes(4), 1, raw_header=b"{'descr': '<f4\xe9', 'fortran_order': False, 'shape': (1,), }")
    out["utf8_v3"] = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'n\u00e9': 'x'}", bytes(4), 3)
    out["bad_utf8_v3"] = npy("", bytes(4), 3, raw_header=b"{'descr': '\xff<f4', 'fortran_order': False, 'shape': (1,), }")
    out["overflow"] = npy(npy_dict("<f4", "(4294967296, 4294967296)"))
    out["huge_dim"] = npy(npy_dict("<f4", "(99999999999999999999999,)"))
    out["truncated"] = npy(npy_dict("<f4", "(3, 4, 5)"), bytes(100))
    out["nested"] = npy("{'shape': " + "(" * 20 + ")" * 20 + "}")
    out["header_len"] = b"\x93NUMPY\x01\x00\xff\xff{'descr'"
    out["short"] = b"\x93NUMPY\x01"
    out["version4"] = b"\x93NUMPY\x04\x00" + npy(npy_dict("<f4", "()"), bytes(4))[8:]
    return out


def bmp(width, height, bpp, rows, header_size=40, compression=0, colors_used=0, extra=b"", palette=()):
    """A BMP as the unit tests of src/io/bmp.rs build them: rows as stored, padded to 4 bytes."""
    offset = 14 + header_size + len(extra) + 4 * len(palette)
    info = struct.pack("<IiiHHI12xII", header_size, width, height, 1, bpp, compression, colors_used, 0)
    info = info.ljust(header_size, b"\0")
    body = b"".join(row + b"\0" * ((4 - len(row) % 4) % 4) for row in rows)
    return b"BM" + struct.pack("<III", 0, 0, offset) + info + extra + b"".join(palette) + body


def bmp_seeds():
    gray = [bytes([v, v, v, 0]) for v in range(256)]
    masks = struct.pack("<III", 0xFF0000, 0xFF00, 0xFF)
    px24 = [bytes([1, 2, 3, 200, 100, 50, 7, 7, 7]), bytes([255, 0, 0, 0, 255, 0, 0, 0, 255])]
    px32 = [bytes(b for i in range(0, 9, 3) for b in (r[i], r[i + 1], r[i + 2], 0x80)) for r in px24]
    out = {
        "top_down_8": bmp(3, -2, 8, [b"\1\2\3", b"\4\5\6"], palette=gray),
        "rgb24": bmp(3, 2, 24, px24),
        "rgb32": bmp(3, 2, 32, px32),
        "bitfields32": bmp(3, 2, 32, px32, compression=3, extra=masks),
        "alphabitfields32": bmp(3, 2, 32, px32, compression=6, extra=masks + bytes(4)),
        "v4_short_palette": bmp(2, 2, 8, [b"\0\1", b"\2\3"], 108, colors_used=4, palette=gray[:4]),
        "rle8": bmp(2, 2, 8, [b"\0\0"] * 2, compression=1, palette=gray),
        "bpp16": bmp(2, 2, 16, [bytes(4)] * 2),
        "os2": bmp(2, 2, 24, [bytes(6)] * 2, header_size=12),
        "huge": bmp(2**31 - 1, 2**31 - 1, 8, [b"\0"], palette=gray),
    }
    v5 = bytearray(bmp(3, 2, 32, px32, 124, compression=3))
    v5[54:66] = masks
    out["v5_bitfields"] = bytes(v5)
    return out


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, color, depth, pixels, interlace=0, extra=()):
    """A PNG of rows `pixels` (lists of sample bytes per row), filter 0."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    if interlace:
        raw = b""
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        bpp = len(pixels[0]) // width
        for x0, y0, dx, dy in passes:
            xs = range(x0, width, dx)
            if not xs:
                continue
            for y in range(y0, height, dy):
                raw += b"\0" + b"".join(pixels[y][x * bpp:(x + 1) * bpp] for x in xs)
    else:
        raw = b"".join(b"\0" + row for row in pixels)
    chunks = [png_chunk(b"IHDR", ihdr), *extra, png_chunk(b"IDAT", zlib.compress(raw)), png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def png_seeds():
    rgb = [bytes([10, 20, 30, 200, 100, 50, 255, 255, 255]), bytes(9)]
    rgba16 = [bytes(range(16)), bytes(range(16, 32))]
    plte = png_chunk(b"PLTE", bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]))
    trns = png_chunk(b"tRNS", bytes([0, 128]))
    gray5 = [bytes([y * 5 + x for x in range(5)]) for y in range(5)]
    return {
        "rgb8": png(3, 2, 2, 8, rgb),
        "rgba16": png(2, 2, 6, 16, rgba16),
        "gray_alpha8": png(2, 1, 4, 8, [bytes([1, 2, 3, 4])]),
        "palette": png(4, 1, 3, 2, [bytes([0b00011011])], extra=(plte,)),
        "palette_trns": png(4, 1, 3, 2, [bytes([0b00011011])], extra=(plte, trns)),
        "gray1": png(9, 2, 0, 1, [b"\xaa\x80", b"\x55\x00"]),
        "gray4": png(3, 1, 0, 4, [b"\x12\x30"]),
        "interlaced8": png(5, 5, 0, 8, gray5, interlace=1),
        "interlaced16": png(3, 3, 0, 16, [bytes(range(y * 6, y * 6 + 6)) for y in range(3)], interlace=1),
        "truncated": png(3, 2, 2, 8, rgb)[:-30],
        "huge_interlaced": b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 16, 6, 0, 0, 1))
        + png_chunk(b"IDAT", zlib.compress(bytes(1000))) + png_chunk(b"IEND", b""),
    }


def safetensors(tensors, metadata=None):
    """A safetensors file: (name, dtype, shape, bytes) in order."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


def safetensors_seeds():
    bn = [("bn.weight", "F32", [2], f32(1, 2)), ("bn.running_var", "F32", [2], f32(1, 0.5)),
          ("bn.num_batches_tracked", "I64", [], struct.pack("<q", 7))]
    optim = [("__optim__.m", "F32", [3], f32(0.1, 0.2, 0.3)), ("__optim__.v", "F32", [3], f32(1, 2, 3))]
    meta = {"optim.step": "4", "optim.loss_scale": "65536", "optim.growth_tracker": "2", "input_scale": "1/255"}
    return {
        "checkpoint": safetensors(bn + optim, meta),
        "checkpoint_i32_nbt": safetensors(bn[:2] + [("bn.num_batches_tracked", "I32", [], struct.pack("<i", 3))]),
        "dtypes": safetensors([
            ("a", "F16", [2], struct.pack("<2e", 1.5, -2)), ("b", "BF16", [1, 1], b"\x80\x3f"),
            ("c", "F64", [1], struct.pack("<d", 0.25)), ("d", "I32", [2], bytes(8)), ("e", "U8", [0], b""),
            ("f", "BOOL", [1], b"\1"),
        ], {"input_scale": "0.5", "base": "8"}),
        "empty": safetensors([]),
        "scalar": safetensors([("s", "F32", [], f32(3))], {"input_scale": "abc"}),
        "optim_missing_meta": safetensors(optim),
        "optim_int": safetensors([("__optim__.m", "I64", [1], bytes(8))]),
        "pytorch_zip": b"PK\x03\x04" + bytes(60),
        "short": b"\x08\0\0\0\0\0\0\0{}",
    }


def copy_fixtures(out_dir, ext, target):
    for name in sorted(os.listdir(FIXTURES)):
        path = os.path.join(FIXTURES, name)
        if name.endswith(ext) and os.path.getsize(path) <= SMALL:
            shutil.copy(path, os.path.join(out_dir, target, "fixture_" + name))


def crate_images(out_dir, binary):
    """BMP and PNG bucket images written by `psi-gpu convert` from small u8 and u16 frames."""
    with tempfile.TemporaryDirectory() as tmp:
        frames = {
            "u8": npy(npy_dict("|u1", "(2, 3, 5)"), bytes(range(0, 240, 8))),
            "u8_1x1": npy(npy_dict("|u1", "(1, 1, 1)"), b"\x7f"),
            "u16": npy(npy_dict("<u2", "(1, 4, 3)"), struct.pack("<12H", *range(0, 65535, 5462))),
        }
        for name, data in frames.items():
            src = os.path.join(tmp, name + ".npy")
            with open(src, "wb") as f:
                f.write(data)
            for fmt in ("bmp", "png"):
                if fmt == "bmp" and name == "u16":
                    continue
                dest = os.path.join(tmp, f"{name}_{fmt}")
                subprocess.run([binary, "convert", "--format", fmt, src, dest], check=True, capture_output=True)
                for image in sorted(os.listdir(dest)):
                    shutil.copy(os.path.join(dest, image), os.path.join(out_dir, fmt, f"crate_{name}_{image}"))


def main():
    out_dir = sys.argv[1]
    groups = {"npy": npy_seeds(), "bmp": bmp_seeds(), "png": png_seeds(), "safetensors": safetensors_seeds()}
    for target, seeds in groups.items():
        os.makedirs(os.path.join(out_dir, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out_dir, target, name), "wb") as f:
                f.write(data)
    copy_fixtures(out_dir, ".npy", "npy")
    copy_fixtures(out_dir, ".safetensors", "safetensors")
    if len(sys.argv) > 2:
        crate_images(out_dir, sys.argv[2])


if __name__ == "__main__":
    main()

// Decoding raw little-endian frame data packed in u32 words, bound as `raw` at binding 1:
// element i of a u8/u16/f16/f32 array is decoded to f32 by raw_value(kind, i), with the host
// type's code `kind` (ops::host_type_code: 0 f32, 1 u8, 2 u16, 3 f16). f16 is decoded from its
// bits, so it needs neither SHADER_F16 nor unpack2x16float (which naga gates behind a capability
// some backends lack).

@group(0) @binding(1) var<storage, read> raw: array<u32>;

fn raw_u8(i: u32) -> f32 {
    return f32((raw[i / 4u] >> (8u * (i % 4u))) & 0xffu);
}

fn raw_u16(i: u32) -> f32 {
    return f32((raw[i / 2u] >> (16u * (i % 2u))) & 0xffffu);
}

fn raw_f16(i: u32) -> f32 {
    let b = raw[i / 2u] >> (16u * (i % 2u));
    let e = (b >> 10u) & 0x1fu;
    let m = b & 0x3ffu;
    var v: f32;
    if (e == 0u) {
        v = f32(m) * exp2(-24.0);
    } else if (e == 31u) {
        v = bitcast<f32>(0x7f800000u | (m << 13u));
    } else {
        v = bitcast<f32>(((e + 112u) << 23u) | (m << 13u));
    }
    return select(v, -v, (b & 0x8000u) != 0u);
}

fn raw_f32(i: u32) -> f32 {
    return bitcast<f32>(raw[i]);
}

fn raw_value(kind: u32, i: u32) -> f32 {
    switch kind {
        case 1u: {
            return raw_u8(i);
        }
        case 2u: {
            return raw_u16(i);
        }
        case 3u: {
            return raw_f16(i);
        }
        default: {
            return raw_f32(i);
        }
    }
}

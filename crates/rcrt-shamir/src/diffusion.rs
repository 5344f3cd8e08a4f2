//! The fixed, keyless "diffusion" permutation `ssss` applies to the secret before sharing it.
//!
//! This is not encryption and gives no confidentiality: XTEA is used here with an all-zero key,
//! purely as a public permutation, because `ssss` does so and interoperable shares must match.
//! It only matters for the format; the secrecy of the scheme comes from the random coefficients
//! of the sharing polynomial.
//!
//! The secret (the big-endian integer of `len` bytes) is laid out the way the tool lays it out in
//! memory: the bytes are taken least significant first and swapped in pairs (`v[2k] = le[2k+1]`,
//! `v[2k+1] = le[2k]`; with an odd length the last byte stays in place). Then overlapping 8-byte
//! windows starting at offsets `0, 2, 4, ..., 40 * len - 2` (taken modulo `len`, wrapping around)
//! are each XTEA-enciphered in place, read as two big-endian 32-bit halves. Undoing it runs the
//! windows from the last offset down with XTEA deciphering.

use zeroize::Zeroizing;

/// The XTEA key schedule constant.
const DELTA: u32 = 0x9E37_79B9;
/// XTEA cycles (each cycle is two Feistel rounds).
const CYCLES: u32 = 32;
/// The all-zero key `ssss` uses: the permutation is public.
const ZERO_KEY: [u32; 4] = [0; 4];

/// Smallest field degree (bits) at which `ssss` applies diffusion.
pub(crate) const MIN_DIFFUSION_DEGREE: usize = 64;

/// XTEA encipherment of one 64-bit block (standard XTEA, 32 cycles).
fn xtea_encipher(v: &mut [u32; 2], key: &[u32; 4]) {
    let [mut v0, mut v1] = *v;
    let mut sum = 0u32;
    for _ in 0..CYCLES {
        v0 = v0.wrapping_add(
            (((v1 << 4) ^ (v1 >> 5)).wrapping_add(v1)) ^ sum.wrapping_add(key[(sum & 3) as usize]),
        );
        sum = sum.wrapping_add(DELTA);
        v1 = v1.wrapping_add(
            (((v0 << 4) ^ (v0 >> 5)).wrapping_add(v0))
                ^ sum.wrapping_add(key[((sum >> 11) & 3) as usize]),
        );
    }
    *v = [v0, v1];
}

/// XTEA decipherment of one 64-bit block, the inverse of [`xtea_encipher`].
fn xtea_decipher(v: &mut [u32; 2], key: &[u32; 4]) {
    let [mut v0, mut v1] = *v;
    let mut sum = DELTA.wrapping_mul(CYCLES);
    for _ in 0..CYCLES {
        v1 = v1.wrapping_sub(
            (((v0 << 4) ^ (v0 >> 5)).wrapping_add(v0))
                ^ sum.wrapping_add(key[((sum >> 11) & 3) as usize]),
        );
        sum = sum.wrapping_sub(DELTA);
        v0 = v0.wrapping_sub(
            (((v1 << 4) ^ (v1 >> 5)).wrapping_add(v1)) ^ sum.wrapping_add(key[(sum & 3) as usize]),
        );
    }
    *v = [v0, v1];
}

/// Applies the block function to the 8 bytes of `data` starting at `start`, wrapping around.
fn process_window(data: &mut [u8], start: usize, f: fn(&mut [u32; 2], &[u32; 4])) {
    let len = data.len();
    let mut bytes = Zeroizing::new([0u8; 8]);
    for (j, b) in bytes.iter_mut().enumerate() {
        *b = data[(start + j) % len];
    }
    let mut block = Zeroizing::new([
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
    ]);
    f(&mut block, &ZERO_KEY);
    bytes[..4].copy_from_slice(&block[0].to_be_bytes());
    bytes[4..].copy_from_slice(&block[1].to_be_bytes());
    for (j, b) in bytes.iter().enumerate() {
        data[(start + j) % len] = *b;
    }
}

/// Maps the big-endian secret to the tool's in-memory layout (see the module docs). The map is
/// an involution composed with a reversal; [`from_layout`] is its inverse.
fn to_layout(be: &[u8]) -> Zeroizing<Vec<u8>> {
    let len = be.len();
    let mut v = Zeroizing::new(vec![0u8; len]);
    for (k, slot) in v.iter_mut().enumerate() {
        // Partner of position k in the pair swap; an unpaired last byte stays.
        let le_index = if k % 2 == 0 && k + 1 < len {
            k + 1
        } else if k % 2 == 1 {
            k - 1
        } else {
            k
        };
        *slot = be[len - 1 - le_index];
    }
    v
}

/// Inverse of [`to_layout`].
fn from_layout(v: &[u8], be: &mut [u8]) {
    let len = v.len();
    for (k, &byte) in v.iter().enumerate() {
        let le_index = if k % 2 == 0 && k + 1 < len {
            k + 1
        } else if k % 2 == 1 {
            k - 1
        } else {
            k
        };
        be[len - 1 - le_index] = byte;
    }
}

/// Applies the forward diffusion to a big-endian secret of at least 8 bytes, in place.
pub(crate) fn diffuse(be: &mut [u8]) {
    let len = be.len();
    if len < 8 {
        return;
    }
    let mut v = to_layout(be);
    for start in (0..40 * len).step_by(2) {
        process_window(&mut v, start, xtea_encipher);
    }
    from_layout(&v, be);
}

/// Undoes [`diffuse`], in place.
pub(crate) fn undiffuse(be: &mut [u8]) {
    let len = be.len();
    if len < 8 {
        return;
    }
    let mut v = to_layout(be);
    for start in (0..40 * len).step_by(2).rev() {
        process_window(&mut v, start, xtea_decipher);
    }
    from_layout(&v, be);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(hex: u64) -> [u32; 2] {
        [(hex >> 32) as u32, hex as u32]
    }

    /// Published XTEA test vectors (32 cycles, big-endian halves).
    #[test]
    fn xtea_known_answers() {
        let key = [0x0001_0203, 0x0405_0607, 0x0809_0a0b, 0x0c0d_0e0f];
        let mut v = block(0x4142_4344_4546_4748);
        xtea_encipher(&mut v, &key);
        assert_eq!(v, block(0x497d_f3d0_7261_2cb5));
        xtea_decipher(&mut v, &key);
        assert_eq!(v, block(0x4142_4344_4546_4748));

        let mut z = block(0x4142_4344_4546_4748);
        xtea_encipher(&mut z, &[0; 4]);
        assert_eq!(z, block(0xa039_0589_f8b8_efa5));
        let mut z = block(0x4141_4141_4141_4141);
        xtea_encipher(&mut z, &[0; 4]);
        assert_eq!(z, block(0xed23_375a_821a_8c2d));
    }

    #[test]
    fn layout_round_trips_even_and_odd() {
        for len in [8usize, 9, 16, 44, 45, 127, 128] {
            let be: Vec<u8> = (0..len).map(|i| i as u8 + 1).collect();
            let v = to_layout(&be);
            let mut back = vec![0u8; len];
            from_layout(&v, &mut back);
            assert_eq!(back, be);
        }
        // Big-endian 01 02 03 -> little-endian 03 02 01 -> pair-swapped 02 03 01.
        assert_eq!(to_layout(&[1, 2, 3]).as_slice(), &[2, 3, 1]);
    }

    #[test]
    fn diffusion_is_a_permutation_that_changes_the_value() {
        for len in [8usize, 9, 32, 44, 128] {
            let original: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let mut data = original.clone();
            diffuse(&mut data);
            assert_ne!(data, original);
            undiffuse(&mut data);
            assert_eq!(data, original);
        }
    }

    #[test]
    fn short_secrets_are_not_diffused() {
        let mut data = vec![1u8, 2, 3, 4, 5, 6, 7];
        diffuse(&mut data);
        assert_eq!(data, vec![1, 2, 3, 4, 5, 6, 7]);
    }
}

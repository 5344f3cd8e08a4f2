//! Arithmetic in GF(2^deg) for the degrees `ssss` uses (8, 16, ..., 1024).
//!
//! An element is a polynomial over GF(2) of degree below `deg`, stored as little-endian 64-bit
//! words (bit `i` of the element is the coefficient of `x^i`). The modulus is the pentanomial
//! `x^deg + x^a + x^b + x^c + 1` with `(a, b, c)` taken from [`MODULI`].
//!
//! Multiplication of secret values ([`Field::mul`]) runs the same instruction sequence for every
//! operand value (masks instead of branches). Inversion ([`Field::inv`]) branches on its input and
//! is only ever applied to values derived from the public share indices.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ShamirError;

/// Smallest field degree `ssss` supports (a 1-byte secret).
pub(crate) const MIN_DEGREE: usize = 8;
/// Largest field degree `ssss` supports (a 128-byte secret).
pub(crate) const MAX_DEGREE: usize = 1024;

/// The middle exponents `(a, b, c)` of the modulus `x^deg + x^a + x^b + x^c + 1`, indexed by
/// `deg / 8 - 1`.
///
/// How this table was obtained (no `ssss` source was used): for every degree, `ssss-split -t 2 -n 2
/// -D -x` was run on random secrets. With the monic sharing polynomial `f(x) = x^2 + c1 x + c0`,
/// share 1 gives `c1 = y1 + 1 + c0`, and share 2 gives `c1 * x mod m`; whenever the top bit of
/// `c1` is set, `(c1 << 1) + (c1 * x mod m)` reveals the low terms of the modulus `m`. Every
/// degree yielded a pentanomial; each one was then checked to be irreducible (Rabin's test) and to
/// be the lexicographically first irreducible pentanomial of its degree (smallest `a`, then `b`,
/// then `c`), which is the convention of G. Seroussi's public "Table of Low-Weight Binary
/// Irreducible Polynomials" (HP Labs, HPL-98-135). The unit tests re-check irreducibility, and the
/// `ssss_interop` integration tests check every degree against the real tool in both directions.
pub(crate) const MODULI: [[u8; 3]; 128] = [
    [4, 3, 1],
    [5, 3, 1],
    [4, 3, 1],
    [7, 3, 2],
    [5, 4, 3],
    [5, 3, 2],
    [7, 4, 2],
    [4, 3, 1],
    [10, 9, 3],
    [9, 4, 2],
    [7, 6, 2],
    [10, 9, 6],
    [4, 3, 1],
    [5, 4, 3],
    [4, 3, 1],
    [7, 2, 1],
    [5, 3, 2],
    [7, 4, 2],
    [6, 3, 2],
    [5, 3, 2],
    [15, 3, 2],
    [11, 3, 2],
    [9, 8, 7],
    [7, 2, 1],
    [5, 3, 2],
    [9, 3, 1],
    [7, 3, 1],
    [9, 8, 3],
    [9, 4, 2],
    [8, 5, 3],
    [15, 14, 10],
    [10, 5, 2],
    [9, 6, 2],
    [9, 3, 2],
    [9, 5, 2],
    [11, 10, 1],
    [7, 3, 2],
    [11, 2, 1],
    [9, 7, 4],
    [4, 3, 1],
    [8, 3, 1],
    [7, 4, 1],
    [7, 2, 1],
    [13, 11, 6],
    [5, 3, 2],
    [7, 3, 2],
    [8, 7, 5],
    [12, 3, 2],
    [13, 10, 6],
    [5, 3, 2],
    [5, 3, 2],
    [9, 5, 2],
    [9, 7, 2],
    [13, 4, 3],
    [4, 3, 1],
    [11, 6, 4],
    [18, 9, 6],
    [19, 18, 13],
    [11, 3, 2],
    [15, 9, 6],
    [4, 3, 1],
    [16, 5, 2],
    [15, 14, 6],
    [8, 5, 2],
    [15, 11, 2],
    [11, 6, 2],
    [7, 5, 3],
    [8, 3, 1],
    [19, 16, 9],
    [11, 9, 6],
    [15, 7, 6],
    [13, 4, 3],
    [14, 13, 3],
    [13, 6, 3],
    [9, 5, 2],
    [19, 13, 6],
    [19, 10, 3],
    [11, 6, 5],
    [9, 2, 1],
    [14, 3, 2],
    [13, 3, 1],
    [7, 5, 4],
    [11, 9, 8],
    [11, 6, 5],
    [23, 16, 9],
    [19, 14, 6],
    [23, 10, 2],
    [8, 3, 2],
    [5, 4, 3],
    [9, 6, 4],
    [4, 3, 2],
    [13, 8, 6],
    [13, 11, 1],
    [13, 10, 3],
    [11, 6, 5],
    [19, 17, 4],
    [15, 14, 7],
    [13, 9, 6],
    [9, 7, 3],
    [9, 7, 1],
    [14, 3, 2],
    [11, 8, 2],
    [11, 6, 4],
    [13, 5, 2],
    [11, 5, 1],
    [11, 4, 1],
    [19, 10, 3],
    [21, 10, 6],
    [13, 3, 1],
    [15, 7, 5],
    [19, 18, 10],
    [7, 5, 3],
    [12, 7, 2],
    [7, 5, 1],
    [14, 9, 6],
    [10, 3, 2],
    [15, 13, 12],
    [12, 11, 9],
    [16, 9, 7],
    [12, 9, 3],
    [9, 5, 2],
    [17, 10, 6],
    [24, 9, 3],
    [17, 15, 13],
    [5, 4, 3],
    [19, 17, 8],
    [15, 6, 3],
    [19, 6, 1],
];

/// An element of GF(2^deg): little-endian 64-bit words, wiped on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Elem(Vec<u64>);

impl Elem {
    /// The words, least significant first.
    #[cfg(test)]
    pub(crate) fn words(&self) -> &[u64] {
        &self.0
    }
}

/// The field GF(2^deg) with the modulus `ssss` uses for that degree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    deg: usize,
    words: usize,
    /// Exponents of the low terms of the modulus: `0, c, b, a`.
    low_terms: [usize; 4],
}

impl Field {
    /// The field of degree `deg` (bits). Fails unless `deg` is a multiple of 8 in `8..=1024`.
    pub(crate) fn new(deg: usize) -> Result<Self, ShamirError> {
        if !(MIN_DEGREE..=MAX_DEGREE).contains(&deg) || deg % 8 != 0 {
            return Err(ShamirError::UnsupportedLength { degree: deg });
        }
        let [a, b, c] = MODULI
            .get(deg / 8 - 1)
            .copied()
            .ok_or(ShamirError::UnsupportedLength { degree: deg })?;
        Ok(Self {
            deg,
            words: deg.div_ceil(64),
            low_terms: [0, usize::from(c), usize::from(b), usize::from(a)],
        })
    }

    /// The degree of the field in bits.
    pub(crate) fn degree(&self) -> usize {
        self.deg
    }

    /// The number of bytes of an element (`deg / 8`).
    pub(crate) fn byte_len(&self) -> usize {
        self.deg / 8
    }

    /// The zero element.
    pub(crate) fn zero(&self) -> Elem {
        Elem(vec![0; self.words])
    }

    /// The element whose bits are those of the (public) integer `v` (`v < 2^deg`).
    pub(crate) fn small(&self, v: u32) -> Elem {
        let mut e = self.zero();
        if let Some(w) = e.0.first_mut() {
            *w = u64::from(v);
        }
        e
    }

    /// Reads a big-endian byte string of exactly `deg / 8` bytes.
    pub(crate) fn read_be(&self, bytes: &[u8]) -> Elem {
        let mut e = self.zero();
        for (i, &byte) in bytes.iter().rev().take(self.byte_len()).enumerate() {
            if let Some(w) = e.0.get_mut(i / 8) {
                *w |= u64::from(byte) << (8 * (i % 8));
            }
        }
        e
    }

    /// Writes the element as a big-endian byte string of exactly `deg / 8` bytes.
    pub(crate) fn write_be(&self, e: &Elem) -> Vec<u8> {
        let len = self.byte_len();
        let mut out = vec![0u8; len];
        for (i, slot) in out.iter_mut().rev().enumerate() {
            let word = e.0.get(i / 8).copied().unwrap_or(0);
            // Truncation intended: take byte `i % 8` of the word.
            *slot = (word >> (8 * (i % 8))) as u8;
        }
        out
    }

    /// `a + b` (XOR) into `a`.
    pub(crate) fn add_assign(&self, a: &mut Elem, b: &Elem) {
        for (x, y) in a.0.iter_mut().zip(&b.0) {
            *x ^= *y;
        }
    }

    /// Multiplies `r` by `x` in place (shift left by one and reduce). Branch-free.
    fn mul_x_assign(&self, r: &mut Elem) {
        let top = self.deg - 1;
        let top_bit = r.0.get(top / 64).map_or(0, |w| (w >> (top % 64)) & 1);
        let mut carry = 0u64;
        for w in r.0.iter_mut() {
            let next = *w >> 63;
            *w = (*w << 1) | carry;
            carry = next;
        }
        // Bit `deg` either fell off the last word (deg % 64 == 0) or must be cleared.
        if self.deg % 64 != 0 {
            if let Some(w) = r.0.get_mut(self.deg / 64) {
                *w &= !(1u64 << (self.deg % 64));
            }
        }
        let mask = 0u64.wrapping_sub(top_bit);
        for &e in &self.low_terms {
            if let Some(w) = r.0.get_mut(e / 64) {
                *w ^= mask & (1u64 << (e % 64));
            }
        }
    }

    /// `a * b`. The sequence of operations does not depend on the values of `a` or `b`.
    pub(crate) fn mul(&self, a: &Elem, b: &Elem) -> Elem {
        let mut r = self.zero();
        for i in (0..self.deg).rev() {
            self.mul_x_assign(&mut r);
            let bit = b.0.get(i / 64).map_or(0, |w| (w >> (i % 64)) & 1);
            let mask = 0u64.wrapping_sub(bit);
            for (x, y) in r.0.iter_mut().zip(&a.0) {
                *x ^= y & mask;
            }
        }
        r
    }

    /// `a * v` for a small public integer `v` (a share index). Runs in time depending only on the
    /// bit length of `v`, not on `a`.
    pub(crate) fn mul_small(&self, a: &Elem, v: u32) -> Elem {
        let mut r = self.zero();
        for i in (0..(32 - v.leading_zeros())).rev() {
            self.mul_x_assign(&mut r);
            if (v >> i) & 1 == 1 {
                self.add_assign(&mut r, a);
            }
        }
        r
    }

    /// The modulus as a polynomial of `deg + 1` bits, in `len` words.
    fn modulus_poly(&self, len: usize) -> Vec<u64> {
        let mut m = vec![0u64; len];
        for e in self.low_terms.iter().copied().chain([self.deg]) {
            if let Some(w) = m.get_mut(e / 64) {
                *w ^= 1u64 << (e % 64);
            }
        }
        m
    }

    /// The multiplicative inverse of `a`, or `None` if `a` is zero (or shares a factor with the
    /// modulus, which cannot happen for an irreducible modulus).
    ///
    /// Extended Euclid over GF(2)[x]. Branches on `a`: use only on public values.
    pub(crate) fn inv(&self, a: &Elem) -> Option<Elem> {
        let len = self.deg / 64 + 1;
        let mut u = a.0.clone();
        u.resize(len, 0);
        let mut v = self.modulus_poly(len);
        let mut g1 = vec![0u64; len];
        let mut g2 = vec![0u64; len];
        if let Some(w) = g1.first_mut() {
            *w = 1;
        }
        loop {
            let du = poly_degree(&u)?;
            if du == 0 {
                break;
            }
            // `v` is never zero here: it starts as the modulus and only takes former values of `u`.
            let dv = poly_degree(&v)?;
            if du < dv {
                std::mem::swap(&mut u, &mut v);
                std::mem::swap(&mut g1, &mut g2);
            }
            let shift = du.abs_diff(dv);
            xor_shifted(&mut u, &v, shift);
            xor_shifted(&mut g1, &g2, shift);
        }
        // `g1` has degree below `deg` (a property of this algorithm); reduce anyway to be safe.
        let m = self.modulus_poly(len);
        while let Some(d) = poly_degree(&g1) {
            if d < self.deg {
                break;
            }
            xor_shifted(&mut g1, &m, d - self.deg);
        }
        g1.truncate(self.words);
        Some(Elem(g1))
    }

    /// `a^2`, by spreading bits and reducing word-wise. Used by the irreducibility test.
    #[cfg(test)]
    pub(crate) fn square(&self, a: &Elem) -> Elem {
        let mut wide = vec![0u64; 2 * self.words + 1];
        for (i, &w) in a.0.iter().enumerate() {
            let (lo, hi) = spread_bits(w);
            if let Some(slot) = wide.get_mut(2 * i) {
                *slot = lo;
            }
            if let Some(slot) = wide.get_mut(2 * i + 1) {
                *slot = hi;
            }
        }
        let m = self.modulus_poly(wide.len());
        while let Some(d) = poly_degree(&wide) {
            if d < self.deg {
                break;
            }
            xor_shifted(&mut wide, &m, d - self.deg);
        }
        wide.truncate(self.words);
        Elem(wide)
    }
}

/// Degree of a polynomial stored as little-endian words, `None` for the zero polynomial.
fn poly_degree(p: &[u64]) -> Option<usize> {
    p.iter()
        .enumerate()
        .rev()
        .find(|(_, w)| **w != 0)
        .map(|(i, w)| 64 * i + 63 - w.leading_zeros() as usize)
}

/// `dst ^= src << shift`, dropping bits beyond `dst`'s length.
fn xor_shifted(dst: &mut [u64], src: &[u64], shift: usize) {
    let (words, bits) = (shift / 64, shift % 64);
    for (i, &w) in src.iter().enumerate() {
        if w == 0 {
            continue;
        }
        if let Some(slot) = dst.get_mut(i + words) {
            *slot ^= w << bits;
        }
        if bits != 0 {
            if let Some(slot) = dst.get_mut(i + words + 1) {
                *slot ^= w >> (64 - bits);
            }
        }
    }
}

/// Spreads the 64 bits of `w` to the even bit positions of a 128-bit value (low, high).
#[cfg(test)]
fn spread_bits(w: u64) -> (u64, u64) {
    let mut lo = 0u64;
    let mut hi = 0u64;
    for i in 0..32 {
        lo |= ((w >> i) & 1) << (2 * i);
        hi |= ((w >> (i + 32)) & 1) << (2 * i);
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn all_fields() -> impl Iterator<Item = Field> {
        (MIN_DEGREE..=MAX_DEGREE)
            .step_by(8)
            .map(|d| Field::new(d).unwrap())
    }

    fn pseudo_random(f: &Field, seed: u64) -> Elem {
        // xorshift64*: deterministic test data, not a secret.
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let bytes: Vec<u8> = (0..f.byte_len())
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect();
        f.read_be(&bytes)
    }

    fn distinct_primes(mut n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut p = 2;
        while p * p <= n {
            if n % p == 0 {
                out.push(p);
                while n % p == 0 {
                    n /= p;
                }
            }
            p += 1;
        }
        if n > 1 {
            out.push(n);
        }
        out
    }

    #[test]
    fn rejects_degrees_outside_the_table() {
        for deg in [0, 4, 12, 1028, 1032, 2048] {
            assert_eq!(
                Field::new(deg),
                Err(ShamirError::UnsupportedLength { degree: deg })
            );
        }
    }

    /// Rabin's test: `m` of degree n is irreducible iff x^(2^n) = x mod m and
    /// gcd(x^(2^(n/p)) - x, m) = 1 for every prime p dividing n.
    #[test]
    fn every_modulus_is_irreducible() {
        for f in all_fields() {
            let n = f.degree();
            let x = f.small(2);
            let mut powers = Vec::with_capacity(n + 1);
            let mut h = x.clone();
            powers.push(h.clone());
            for _ in 0..n {
                h = f.square(&h);
                powers.push(h.clone());
            }
            assert!(powers[n] == x, "x^(2^{n}) != x for degree {n}");
            for p in distinct_primes(n) {
                let mut g = powers[n / p].clone();
                f.add_assign(&mut g, &x);
                assert!(f.inv(&g).is_some(), "gcd != 1 for degree {n}, prime {p}");
            }
        }
    }

    #[test]
    fn square_matches_mul() {
        for f in all_fields() {
            let a = pseudo_random(&f, f.degree() as u64);
            assert!(f.square(&a) == f.mul(&a, &a), "degree {}", f.degree());
        }
    }

    #[test]
    fn aes_field_known_product() {
        // GF(2^8) with x^8 + x^4 + x^3 + x + 1 is the AES field: 0x57 * 0x83 = 0xc1 (FIPS-197).
        let f = Field::new(8).unwrap();
        let p = f.mul(&f.small(0x57), &f.small(0x83));
        assert_eq!(p.words(), &[0xc1]);
        assert_eq!(f.inv(&f.small(0x53)).unwrap().words(), &[0xca]);
    }

    #[test]
    fn inverse_and_mul_small_agree_with_mul() {
        for f in all_fields().step_by(5) {
            let one = f.small(1);
            for seed in 1..4u64 {
                let a = pseudo_random(&f, seed);
                let ai = f.inv(&a).unwrap();
                assert!(f.mul(&a, &ai) == one, "degree {}", f.degree());
                for v in [1u32, 2, 3, 5, 200, 255] {
                    assert!(f.mul_small(&a, v) == f.mul(&a, &f.small(v)));
                }
            }
            assert!(f.inv(&f.zero()).is_none());
        }
    }

    #[test]
    fn multiplication_distributes_and_commutes() {
        for f in all_fields().step_by(7) {
            let a = pseudo_random(&f, 11);
            let b = pseudo_random(&f, 12);
            let c = pseudo_random(&f, 13);
            assert!(f.mul(&a, &b) == f.mul(&b, &a));
            let mut b_plus_c = b.clone();
            f.add_assign(&mut b_plus_c, &c);
            let mut ab_plus_ac = f.mul(&a, &b);
            f.add_assign(&mut ab_plus_ac, &f.mul(&a, &c));
            assert!(f.mul(&a, &b_plus_c) == ab_plus_ac);
        }
    }

    #[test]
    fn byte_conversion_round_trips_big_endian() {
        let f = Field::new(24).unwrap();
        let e = f.read_be(&[0x01, 0x02, 0x03]);
        assert_eq!(e.words(), &[0x010203]);
        assert_eq!(f.write_be(&e), vec![1, 2, 3]);
        for f in all_fields().step_by(3) {
            let bytes: Vec<u8> = (0..f.byte_len()).map(|i| (i * 7 + 1) as u8).collect();
            assert_eq!(f.write_be(&f.read_be(&bytes)), bytes);
        }
    }
}

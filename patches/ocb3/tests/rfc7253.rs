//! The test vectors of RFC 7253, Appendix A.

use aes::{Aes128, Aes192, Aes256};
use ocb3::aead::consts::{U12, U16, U8};
use ocb3::{AeadInPlace, GenericArray, KeyInit, Ocb3};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The bytes 00 01 02 ... (the samples' A and P).
fn counting(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

/// Appendix A's sample results: K = 000102...0F, N = BBAA99887766554433221100
/// + i, A and P prefixes of 000102..., C || T.
const SAMPLES: [(u8, usize, usize, &str); 16] = [
    (0x00, 0, 0, "785407bfffc8ad9edcc5520ac9111ee6"),
    (0x01, 8, 8, "6820b3657b6f615a5725bda0d3b4eb3a257c9af1f8f03009"),
    (0x02, 8, 0, "81017f8203f081277152fade694a0a00"),
    (0x03, 0, 8, "45dd69f8f5aae72414054cd1f35d82760b2cd00d2f99bfa9"),
    (0x04, 16, 16, "571d535b60b277188be5147170a9a22c3ad7a4ff3835b8c5701c1ccec8fc3358"),
    (0x05, 16, 0, "8cf761b6902ef764462ad86498ca6b97"),
    (0x06, 0, 16, "5ce88ec2e0692706a915c00aeb8b2396f40e1c743f52436bdf06d8fa1eca343d"),
    (0x07, 24, 24, "1ca2207308c87c010756104d8840ce1952f09673a448a122c92c62241051f57356d7f3c90bb0e07f"),
    (0x08, 24, 0, "6dc225a071fc1b9f7c69f93b0f1e10de"),
    (0x09, 0, 24, "221bd0de7fa6fe993eccd769460a0af2d6cded0c395b1c3ce725f32494b9f914d85c0b1eb38357ff"),
    (0x0a, 32, 32, "bd6f6c496201c69296c11efd138a467abd3c707924b964deaffc40319af5a48540fbba186c5553c68ad9f592a79a4240"),
    (0x0b, 32, 0, "fe80690bee8a485d11f32965bc9d2a32"),
    (0x0c, 0, 32, "2942bfc773bda23cabc6acfd9bfd5835bd300f0973792ef46040c53f1432bcdfb5e1dde3bc18a5f840b52e653444d5df"),
    (0x0d, 40, 40, "d5ca91748410c1751ff8a2f618255b68a0a12e093ff454606e59f9c1d0ddc54b65e8628e568bad7aed07ba06a4a69483a7035490c5769e60"),
    (0x0e, 40, 0, "c5cd9d1850c141e358649994ee701b68"),
    (0x0f, 0, 40, "4412923493c57d5de0d700f753cce0d1d2d95060122e9f15a5ddbfc5787e50b5cc55ee507bcb084e479ad363ac366b95a98ca5f3000b1479"),
];

#[test]
fn appendix_a_sample_results() {
    let ocb = Ocb3::<Aes128>::new(GenericArray::from_slice(&counting(16)));
    for (last, a_len, p_len, expected) in SAMPLES {
        let mut nonce = hex("bbaa99887766554433221100");
        nonce[11] = last;
        let nonce = GenericArray::from_slice(&nonce);
        let aad = counting(a_len);
        let mut buf = counting(p_len);
        let tag = ocb
            .encrypt_in_place_detached(nonce, &aad, &mut buf)
            .expect("encrypt");
        buf.extend_from_slice(&tag);
        assert_eq!(buf, hex(expected), "sample {last}");
        // And back.
        let (c, t) = buf.split_at_mut(p_len);
        ocb.decrypt_in_place_detached(nonce, &aad, c, GenericArray::from_slice(t))
            .expect("decrypt");
        assert_eq!(c, &counting(p_len)[..], "sample {last}");
    }
}

/// num2str(i, 96).
fn nonce96(i: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[8..].copy_from_slice(&i.to_be_bytes());
    n
}

/// Appendix A's iteration over key and tag lengths: every plaintext and
/// associated-data length up to 127 bytes, then 22,400 bytes of
/// associated data.
fn wider_variety<O: KeyInit + AeadInPlace<NonceSize = U12>>(
    keylen: usize,
    taglen: usize,
) -> Vec<u8> {
    let mut key = vec![0u8; keylen];
    key[keylen - 1] = (8 * taglen) as u8;
    let ocb = O::new(GenericArray::from_slice(&key));
    let mut c = Vec::new();
    let seal = |n: u32, a: &[u8], p: &[u8], c: &mut Vec<u8>| {
        let mut buf = p.to_vec();
        let tag = ocb
            .encrypt_in_place_detached(GenericArray::from_slice(&nonce96(n)), a, &mut buf)
            .expect("encrypt");
        c.extend_from_slice(&buf);
        c.extend_from_slice(&tag);
    };
    for i in 0..128u32 {
        let s = vec![0u8; i as usize];
        seal(3 * i + 1, &s, &s, &mut c);
        seal(3 * i + 2, &[], &s, &mut c);
        seal(3 * i + 3, &s, &[], &mut c);
    }
    let mut out = Vec::new();
    seal(385, &c, &[], &mut out);
    out
}

#[test]
fn appendix_a_wider_variety() {
    let cases: [(Vec<u8>, &str); 9] = [
        (
            wider_variety::<Ocb3<Aes128, U12, U16>>(16, 16),
            "67e944d23256c5e0b6c61fa22fdf1ea2",
        ),
        (
            wider_variety::<Ocb3<Aes192, U12, U16>>(24, 16),
            "f673f2c3e7174aae7bae986ca9f29e17",
        ),
        (
            wider_variety::<Ocb3<Aes256, U12, U16>>(32, 16),
            "d90eb8e9c977c88b79dd793d7ffa161c",
        ),
        (
            wider_variety::<Ocb3<Aes128, U12, U12>>(16, 12),
            "77a3d8e73589158d25d01209",
        ),
        (
            wider_variety::<Ocb3<Aes192, U12, U12>>(24, 12),
            "05d56ead2752c86be6932c5e",
        ),
        (
            wider_variety::<Ocb3<Aes256, U12, U12>>(32, 12),
            "5458359ac23b0cba9e6330dd",
        ),
        (
            wider_variety::<Ocb3<Aes128, U12, U8>>(16, 8),
            "192c9b7bd90ba06a",
        ),
        (
            wider_variety::<Ocb3<Aes192, U12, U8>>(24, 8),
            "0066bc6e0ef34e24",
        ),
        (
            wider_variety::<Ocb3<Aes256, U12, U8>>(32, 8),
            "7d4ea5d445501cbe",
        ),
    ];
    for (i, (got, expected)) in cases.iter().enumerate() {
        assert_eq!(got, &hex(expected), "case {i}");
    }
}

//! Against an independent OCB3 implementation (RustCrypto's `ocb3` 0.2,
//! which hands the cipher one block at a time): the same ciphertexts and
//! tags for the nonce and tag sizes sequoia uses, across the lengths where
//! this crate's wide path, its tail and the partial block meet; and what a
//! decryption does with altered input.

use ocb3::aead::consts::{U12, U15};
use ocb3::{AeadCore, AeadInPlace, GenericArray, KeyInit, Ocb3};
use proptest::prelude::*;
use reference::aead::AeadInOut;

/// Seals with both implementations, checks they agree, opens ours back
/// and refuses any one altered bit.
fn agree<Ours, Theirs>(key: &[u8], nonce: &[u8], aad: &[u8], plain: &[u8], flip: usize)
where
    Ours: KeyInit + AeadInPlace,
    Theirs: reference::aead::KeyInit + AeadInOut,
{
    let ours = Ours::new(GenericArray::from_slice(key));
    let theirs = <Theirs as reference::aead::KeyInit>::new_from_slice(key).expect("key size");
    let n = GenericArray::from_slice(nonce);
    let mut mine = plain.to_vec();
    let tag = ours
        .encrypt_in_place_detached(n, aad, &mut mine)
        .expect("encrypt");
    let mut other = plain.to_vec();
    let other_tag = theirs
        .encrypt_inout_detached(
            &reference::aead::Nonce::<Theirs>::try_from(nonce).expect("nonce size"),
            aad,
            other.as_mut_slice().into(),
        )
        .expect("encrypt");
    assert_eq!(mine, other, "ciphertext");
    assert_eq!(tag.as_slice(), other_tag.as_slice(), "tag");

    let mut opened = mine.clone();
    ours.decrypt_in_place_detached(n, aad, &mut opened, &tag)
        .expect("decrypt");
    assert_eq!(opened, plain);

    // One bit altered, in the ciphertext, the tag or the associated data.
    let (mut c, mut t, mut a) = (mine.clone(), tag.clone(), aad.to_vec());
    let total = (c.len() + t.len() + a.len()) * 8;
    let bit = flip % total;
    let byte = bit / 8;
    let mask = 1u8 << (bit % 8);
    if byte < c.len() {
        c[byte] ^= mask;
    } else if byte < c.len() + t.len() {
        t[byte - c.len()] ^= mask;
    } else {
        a[byte - c.len() - t.len()] ^= mask;
    }
    assert!(ours.decrypt_in_place_detached(n, &a, &mut c, &t).is_err());
    assert!(
        c.iter().all(|&b| b == 0),
        "no unauthenticated plaintext left"
    );
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// AES-256 with 15-byte nonces: sequoia's SEIPDv2 (4 KiB chunks).
    #[test]
    fn aes256_nonce15_matches(key in prop::array::uniform32(any::<u8>()),
                              nonce in prop::array::uniform15(any::<u8>()),
                              aad in bytes(80), plain in bytes(4200), flip in any::<usize>()) {
        agree::<Ocb3<aes::Aes256, U15>, reference::Ocb3<reference_aes::Aes256, reference::consts::U15>>(
            &key, &nonce, &aad, &plain, flip);
    }

    /// AES-128 with 12-byte nonces, and long associated data (its own
    /// wide path).
    #[test]
    fn aes128_nonce12_matches(key in prop::array::uniform16(any::<u8>()),
                              nonce in prop::array::uniform12(any::<u8>()),
                              aad in bytes(700), plain in bytes(700), flip in any::<usize>()) {
        agree::<Ocb3<aes::Aes128, U12>, reference::Ocb3<reference_aes::Aes128, reference::consts::U12>>(
            &key, &nonce, &aad, &plain, flip);
    }
}

/// Every length around the wide path's boundaries (16 blocks), with and
/// without a partial block.
#[test]
fn every_length_up_to_three_wide_groups() {
    let key = [7u8; 32];
    let nonce = [9u8; 15];
    let data: Vec<u8> = (0..800u32).map(|i| (i * 31 % 251) as u8).collect();
    for len in 0..=800 {
        agree::<
            Ocb3<aes::Aes256, U15>,
            reference::Ocb3<reference_aes::Aes256, reference::consts::U15>,
        >(&key, &nonce, &data[..len % 97], &data[..len], len * 13);
    }
}

#[test]
fn sizes_are_the_aead_traits() {
    assert_eq!(<Ocb3<aes::Aes256, U15> as AeadCore>::NonceSize::USIZE, 15);
    assert_eq!(<Ocb3<aes::Aes256, U15> as AeadCore>::TagSize::USIZE, 16);
}

use ocb3::aead::generic_array::typenum::Unsigned;

//! A self-signed X.509 certificate, written out by hand in DER: an ECDSA
//! P-256 key (ring makes it and signs with it), the names it is for, and
//! dates that do not run out.
//!
//! A certificate is a nested structure of tag-length-value items (ASN.1's
//! DER encoding), and the one skiffd needs is fixed except for its key, its
//! serial number and its names, so it is short to write directly. (The
//! general tool, rcgen, would add more to the binary than all of this
//! module's callers together.)
//!
//! ```text
//!   Certificate ::= SEQUENCE {
//!     tbsCertificate  SEQUENCE {
//!       version [0] 2 (v3) · serialNumber · signature algorithm
//!       issuer = subject = CN=skiffd · validity 1975 .. 9999
//!       subjectPublicKeyInfo (EC P-256) · extensions [3] { subjectAltName }
//!     }
//!     signatureAlgorithm  ecdsa-with-SHA256
//!     signatureValue      BIT STRING: ECDSA over the DER of tbsCertificate
//!   }
//! ```

use std::net::IpAddr;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

/// A new certificate and its key.
pub struct SelfSigned {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

// DER tags.
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// `[0] EXPLICIT`: the version.
const CONTEXT_0: u8 = 0xa0;
/// `[3] EXPLICIT`: the extensions.
const CONTEXT_3: u8 = 0xa3;
/// A subjectAltName's `dNSName` and `iPAddress` (`[2]`, `[7]` IMPLICIT).
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;

// Object identifiers, already encoded.
/// 1.2.840.10045.4.3.2
const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// 1.2.840.10045.2.1
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7
const PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 2.5.4.3
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// Valid from 1975 (so that a clock not yet set at boot does not find it
/// too new) to 9999-12-31, RFC 5280's "no well-defined expiration date":
/// the certificate is trusted by its pinned fingerprint, and replaced by
/// removing its files, not by a date.
const NOT_BEFORE: &[u8] = b"750101000000Z";
const NOT_AFTER: &[u8] = b"99991231235959Z";

/// Makes a key and a certificate for `names` (host names, and IP
/// addresses written as such), signed by that same key.
pub fn generate(names: &[String]) -> Result<SelfSigned, String> {
    let rng = SystemRandom::new();
    let alg = &ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| "cannot make a key")?;
    let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
        .map_err(|_| "cannot use the key just made")?;

    // A positive 16-byte serial: random, so no two certificates share one.
    let mut serial = [0u8; 16];
    rng.fill(&mut serial).map_err(|_| "no randomness")?;
    serial[0] = (serial[0] & 0x7f) | 0x01;

    let algorithm = der(SEQUENCE, &der(OID, ECDSA_WITH_SHA256));
    let name = der(
        SEQUENCE,
        &der(
            SET,
            &der(
                SEQUENCE,
                &[der(OID, COMMON_NAME), der(UTF8_STRING, b"skiffd")].concat(),
            ),
        ),
    );
    let validity = der(
        SEQUENCE,
        &[der(UTC_TIME, NOT_BEFORE), der(GENERALIZED_TIME, NOT_AFTER)].concat(),
    );
    let public_key = der(
        SEQUENCE,
        &[
            der(
                SEQUENCE,
                &[der(OID, EC_PUBLIC_KEY), der(OID, PRIME256V1)].concat(),
            ),
            bit_string(key.public_key().as_ref()),
        ]
        .concat(),
    );
    let mut alt_names = Vec::new();
    for n in names {
        match n.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => alt_names.extend(der(IP_ADDRESS, &ip.octets())),
            Ok(IpAddr::V6(ip)) => alt_names.extend(der(IP_ADDRESS, &ip.octets())),
            Err(_) => alt_names.extend(der(DNS_NAME, n.as_bytes())),
        }
    }
    let extensions = der(
        CONTEXT_3,
        &der(
            SEQUENCE,
            &der(
                SEQUENCE,
                &[
                    der(OID, SUBJECT_ALT_NAME),
                    der(OCTET_STRING, &der(SEQUENCE, &alt_names)),
                ]
                .concat(),
            ),
        ),
    );
    let tbs = der(
        SEQUENCE,
        &[
            der(CONTEXT_0, &der(INTEGER, &[2])),
            der(INTEGER, &serial),
            algorithm.clone(),
            name.clone(),
            validity,
            name,
            public_key,
            extensions,
        ]
        .concat(),
    );
    let signature = key.sign(&rng, &tbs).map_err(|_| "cannot sign")?;
    let cert_der = der(
        SEQUENCE,
        &[tbs, algorithm, bit_string(signature.as_ref())].concat(),
    );
    Ok(SelfSigned {
        cert_der,
        key_der: pkcs8.as_ref().to_vec(),
    })
}

/// One DER item: the tag, the length (short form below 128, else the
/// count of length bytes and the big-endian length), the contents.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len().to_be_bytes();
    let mut out = vec![tag];
    if contents.len() < 0x80 {
        out.push(len[len.len() - 1]);
    } else {
        let skip = len.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (len.len() - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

/// A BIT STRING of whole bytes: a leading 0 says no bits are unused.
fn bit_string(bytes: &[u8]) -> Vec<u8> {
    der(BIT_STRING, &[&[0u8][..], bytes].concat())
}

/// `der` as PEM text with the given label (`CERTIFICATE`, `PRIVATE KEY`):
/// base64 in lines of 64 characters between BEGIN and END lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                base64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                base64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = base64.as_str();
    while !rest.is_empty() {
        let (line, after) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = after;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_take_the_short_form_below_128_and_the_long_form_above() {
        assert_eq!(der(OCTET_STRING, &[7; 3]), [0x04, 3, 7, 7, 7]);
        assert_eq!(der(OCTET_STRING, &[0; 127])[..2], [0x04, 127]);
        assert_eq!(der(OCTET_STRING, &[0; 128])[..3], [0x04, 0x81, 128]);
        assert_eq!(der(OCTET_STRING, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(der(OCTET_STRING, &[0; 300]).len(), 304);
        assert_eq!(bit_string(&[0xff]), [0x03, 2, 0, 0xff]);
    }

    #[test]
    fn pem_is_base64_in_lines_of_64() {
        // RFC 4648's test vectors, one padding case each.
        let body = |der: &[u8]| pem("X", der).lines().nth(1).unwrap().to_string();
        assert_eq!(body(b"Man"), "TWFu");
        assert_eq!(body(b"Ma"), "TWE=");
        assert_eq!(body(b"M"), "TQ==");
        assert_eq!(body(b"foobar"), "Zm9vYmFy");
        let long = pem("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        // 100 bytes are 136 characters of base64.
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 8);
        assert_eq!(lines[4], "-----END CERTIFICATE-----");
    }

    #[test]
    fn two_certificates_differ_in_key_and_serial_and_read_back_as_pem() {
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        let a = generate(&names).unwrap();
        let b = generate(&names).unwrap();
        assert_ne!(a.cert_der, b.cert_der);
        assert_ne!(a.key_der, b.key_der);
        use rustls::pki_types::pem::PemObject;
        let text = pem("CERTIFICATE", &a.cert_der);
        let back = rustls::pki_types::CertificateDer::from_pem_slice(text.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), a.cert_der);
        let key = pem("PRIVATE KEY", &a.key_der);
        let back = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        assert_eq!(back.secret_der(), a.key_der);
    }
}

use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{CryptoError, KeyMaterial, Passphrase, SecretKey32};

/// Argon2id parameters as stored in the plain header of KMS_DATA, so that a lost key file
/// can be re-derived from its passphrase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub algorithm: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
}

const ALGORITHM: &str = "argon2id";
const FRESH_SALT_LEN: usize = 16;
// Bounds on what a (possibly tampered) header may ask for, so that loading it cannot
// exhaust memory or hang the daemon.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 100;
const MAX_P_COST: u32 = 64;
const MIN_SALT_LEN: usize = argon2::MIN_SALT_LEN;
const MAX_SALT_LEN: usize = 64;
const MIN_OUTPUT_LEN: usize = 16;
const MAX_OUTPUT_LEN: usize = 64;

impl KdfParams {
    pub const DEFAULT_M_COST_KIB: u32 = 65536;
    pub const DEFAULT_T_COST: u32 = 3;
    pub const DEFAULT_P_COST: u32 = 1;

    pub fn with_fresh_salt() -> Self {
        let mut salt = vec![0u8; FRESH_SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        Self::with_salt(salt)
    }

    pub fn with_salt(salt: Vec<u8>) -> Self {
        KdfParams {
            algorithm: ALGORITHM.to_owned(),
            m_cost_kib: Self::DEFAULT_M_COST_KIB,
            t_cost: Self::DEFAULT_T_COST,
            p_cost: Self::DEFAULT_P_COST,
            salt,
        }
    }

    pub fn derive(&self, pass: &Passphrase, len: usize) -> Result<KeyMaterial, CryptoError> {
        let mut out = Zeroizing::new(vec![0u8; len]);
        self.derive_into(pass, &mut out)?;
        Ok(KeyMaterial::from_vec(std::mem::take(&mut *out)))
    }

    pub fn derive_key32(&self, pass: &Passphrase) -> Result<SecretKey32, CryptoError> {
        let mut out = Zeroizing::new([0u8; 32]);
        self.derive_into(pass, &mut *out)?;
        Ok(SecretKey32::from_slice(&out))
    }

    fn derive_into(&self, pass: &Passphrase, out: &mut [u8]) -> Result<(), CryptoError> {
        let params = self.validate(out.len())?;
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(pass.expose().as_bytes(), &self.salt, out)
            .map_err(|e| CryptoError::Kdf(e.to_string()))
    }

    fn validate(&self, out_len: usize) -> Result<Params, CryptoError> {
        let fail = |msg: String| Err(CryptoError::Kdf(msg));
        if self.algorithm != ALGORITHM {
            return fail(format!("unsupported algorithm {:?}", self.algorithm));
        }
        if !(MIN_SALT_LEN..=MAX_SALT_LEN).contains(&self.salt.len()) {
            return fail(format!(
                "salt is {} bytes (expected {MIN_SALT_LEN} to {MAX_SALT_LEN})",
                self.salt.len()
            ));
        }
        if !(1..=MAX_T_COST).contains(&self.t_cost) {
            return fail(format!(
                "t_cost {} out of range 1..={MAX_T_COST}",
                self.t_cost
            ));
        }
        if !(1..=MAX_P_COST).contains(&self.p_cost) {
            return fail(format!(
                "p_cost {} out of range 1..={MAX_P_COST}",
                self.p_cost
            ));
        }
        let min_m = 8 * self.p_cost;
        if !(min_m..=MAX_M_COST_KIB).contains(&self.m_cost_kib) {
            return fail(format!(
                "m_cost_kib {} out of range {min_m}..={MAX_M_COST_KIB}",
                self.m_cost_kib
            ));
        }
        if !(MIN_OUTPUT_LEN..=MAX_OUTPUT_LEN).contains(&out_len) {
            return fail(format!(
                "output length {out_len} out of range {MIN_OUTPUT_LEN}..={MAX_OUTPUT_LEN}"
            ));
        }
        Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(out_len))
            .map_err(|e| CryptoError::Kdf(e.to_string()))
    }
}

// The `hex` crate's own serde support is behind a feature this crate does not enable.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass() -> Passphrase {
        Passphrase::new("correct horse battery staple".into())
    }

    #[test]
    fn derive_is_deterministic_per_salt() {
        let a = KdfParams::with_salt(vec![1; 16]);
        let b = KdfParams::with_salt(vec![2; 16]);
        let k1 = a.derive_key32(&pass()).unwrap();
        assert_eq!(k1.expose(), a.derive_key32(&pass()).unwrap().expose());
        assert_ne!(k1.expose(), b.derive_key32(&pass()).unwrap().expose());
        assert_eq!(a.derive(&pass(), 24).unwrap().len(), 24);
    }

    #[test]
    fn fresh_salt_uses_defaults() {
        let p = KdfParams::with_fresh_salt();
        assert_eq!(p.algorithm, "argon2id");
        assert_eq!(p.salt.len(), 16);
        assert_eq!((p.m_cost_kib, p.t_cost, p.p_cost), (65536, 3, 1));
        assert_ne!(p.salt, KdfParams::with_fresh_salt().salt);
    }

    #[test]
    fn absurd_params_are_refused_before_any_work() {
        let good = KdfParams::with_salt(vec![7; 16]);
        let cases: Vec<(KdfParams, usize)> = vec![
            (
                KdfParams {
                    algorithm: "argon2i".into(),
                    ..good.clone()
                },
                32,
            ),
            (
                KdfParams {
                    salt: vec![7; 7],
                    ..good.clone()
                },
                32,
            ),
            (
                KdfParams {
                    salt: vec![],
                    ..good.clone()
                },
                32,
            ),
            (
                KdfParams {
                    t_cost: 0,
                    ..good.clone()
                },
                32,
            ),
            (
                KdfParams {
                    t_cost: 101,
                    ..good.clone()
                },
                32,
            ),
            (
                KdfParams {
                    p_cost: 0,
                    ..good.clone()
                },
                32,
            ),
            (
                KdfParams {
                    m_cost_kib: 4 * 1024 * 1024 + 1,
                    ..good.clone()
                },
                32,
            ),
            (
                KdfParams {
                    m_cost_kib: u32::MAX,
                    ..good.clone()
                },
                32,
            ),
            (
                KdfParams {
                    m_cost_kib: 7,
                    ..good.clone()
                },
                32,
            ),
            (good.clone(), 0),
            (good.clone(), 1 << 20),
        ];
        for (params, len) in cases {
            let r = params.derive(&pass(), len);
            assert!(
                matches!(r, Err(CryptoError::Kdf(_))),
                "{params:?} len {len}"
            );
        }
    }

    #[test]
    fn serde_round_trip_with_hex_salt() {
        let p = KdfParams::with_salt(vec![0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""salt":"deadbeef00010203""#), "{json}");
        assert_eq!(serde_json::from_str::<KdfParams>(&json).unwrap(), p);
        let bad = json.replace("deadbeef", "zzadbeef");
        assert!(serde_json::from_str::<KdfParams>(&bad).is_err());
    }
}

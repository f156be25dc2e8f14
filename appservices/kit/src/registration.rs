//! Registration files. The type and its validation live in `plexus-core`, shared with the
//! homeserver so the two sides can never disagree on what a namespace matches; the kit only adds
//! reading the file.

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use plexus_core::appservice::{Kind, Namespace, Namespaces, Registration, RegistrationError};

/// Why a registration file could not be used.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read registration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registration file {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: RegistrationError,
    },
}

/// Read and validate a registration file (YAML or JSON).
pub fn load(path: impl AsRef<Path>) -> Result<Registration, LoadError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    Registration::parse(&text).map_err(|source| LoadError::Invalid {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_names_the_file_in_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg.yaml");
        let err = load(&path).unwrap_err();
        assert!(matches!(err, LoadError::Read { .. }));
        assert!(err.to_string().contains("reg.yaml"));

        std::fs::write(
            &path,
            "id: x\nas_token: a\nhs_token: a\nsender_localpart: bot\n",
        )
        .unwrap();
        assert!(matches!(
            load(&path).unwrap_err(),
            LoadError::Invalid {
                source: RegistrationError::SameTokens,
                ..
            }
        ));

        std::fs::write(
            &path,
            "id: x\nurl: http://127.0.0.1:9\nas_token: a\nhs_token: b\nsender_localpart: bot\n",
        )
        .unwrap();
        assert_eq!(load(&path).unwrap().sender_localpart, "bot");
    }
}

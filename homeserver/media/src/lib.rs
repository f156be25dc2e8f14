//! The media repository's building blocks, free of HTTP and of the store: where uploaded bytes
//! live on disk, how thumbnails are made, how media crosses federation and how it is served
//! to browsers safely.

pub mod blob;
pub mod disposition;
pub mod multipart;
pub mod thumbnail;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("content is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    #[error("cannot generate a thumbnail for this content: {0}")]
    NotThumbnailable(String),
    #[error("malformed multipart body: {0}")]
    Multipart(String),
    #[error("media storage: {0}")]
    Io(#[from] std::io::Error),
}

//! Thumbnails: requests are snapped to a few standard sizes (the spec's recommended set), so
//! the cache stays small however many sizes clients ask for, and images are never upscaled.

use std::io::Cursor;

use image::{imageops::FilterType, DynamicImage, ImageFormat, ImageReader};

use crate::MediaError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Fit inside the box, keeping the aspect ratio.
    Scale,
    /// Fill the box exactly, cutting off what sticks out.
    Crop,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Scale => "scale",
            Method::Crop => "crop",
        }
    }
}

/// A thumbnail size that is generated and cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Size {
    pub width: u32,
    pub height: u32,
    pub method: Method,
}

/// The spec's recommended sizes, smallest first.
pub const SIZES: [Size; 5] = [
    Size {
        width: 32,
        height: 32,
        method: Method::Crop,
    },
    Size {
        width: 96,
        height: 96,
        method: Method::Crop,
    },
    Size {
        width: 320,
        height: 240,
        method: Method::Scale,
    },
    Size {
        width: 640,
        height: 480,
        method: Method::Scale,
    },
    Size {
        width: 800,
        height: 600,
        method: Method::Scale,
    },
];

/// The smallest standard size at least as large as asked, preferring the asked method; past
/// the largest, the largest.
pub fn pick(width: u32, height: u32, method: Method) -> Size {
    let fits = |s: &&Size| s.width >= width && s.height >= height;
    SIZES
        .iter()
        .filter(|s| s.method == method)
        .find(fits)
        .or_else(|| SIZES.iter().find(fits))
        .copied()
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// Content types a thumbnail can be made of.
pub fn can_thumbnail(content_type: &str) -> bool {
    matches!(
        crate::disposition::essence(content_type).as_str(),
        "image/png" | "image/jpeg" | "image/jpg" | "image/gif" | "image/webp"
    )
}

pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Largest source image decoded, per side and in memory, so a small file that claims huge
/// dimensions (a decompression bomb) is refused instead of exhausting memory.
const MAX_SIDE: u32 = 12_000;
const MAX_ALLOC: u64 = 512 * 1024 * 1024;

/// Makes a thumbnail. CPU-bound: run it off the async threads.
pub fn generate(src: &[u8], size: Size) -> Result<Thumbnail, MediaError> {
    let bad = |e: &dyn std::fmt::Display| MediaError::NotThumbnailable(e.to_string());
    let mut reader = ImageReader::new(Cursor::new(src))
        .with_guessed_format()
        .map_err(|e| bad(&e))?;
    let format = reader
        .format()
        .ok_or_else(|| bad(&"not a recognised image format"))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(&e))?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(bad(&"empty image"));
    }
    let out = match size.method {
        Method::Scale if w <= size.width && h <= size.height => img,
        Method::Scale => img.resize(size.width, size.height, FilterType::Triangle),
        Method::Crop => {
            // Never upscale: a source smaller than the box gets the box's aspect ratio at the
            // largest size it can give.
            let f = (w as f64 / size.width as f64)
                .min(h as f64 / size.height as f64)
                .min(1.0);
            let tw = ((size.width as f64 * f).round() as u32).max(1);
            let th = ((size.height as f64 * f).round() as u32).max(1);
            img.resize_to_fill(tw, th, FilterType::Triangle)
        }
    };
    encode(out, format)
}

/// PNG where the source may be transparent or is line art, JPEG for photographs.
fn encode(img: DynamicImage, source: ImageFormat) -> Result<Thumbnail, MediaError> {
    let bad = |e: &dyn std::fmt::Display| MediaError::NotThumbnailable(e.to_string());
    let (width, height) = (img.width(), img.height());
    let mut bytes = Vec::new();
    let png = source != ImageFormat::Jpeg || img.color().has_alpha();
    let content_type = if png {
        img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .map_err(|e| bad(&e))?;
        "image/png"
    } else {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80)
            .encode_image(&img.to_rgb8())
            .map_err(|e| bad(&e))?;
        "image/jpeg"
    };
    Ok(Thumbnail {
        bytes,
        content_type,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
        }));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w, h, image::Rgb([9, 99, 199])));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .unwrap();
        out
    }

    #[test]
    fn requests_snap_to_standard_sizes() {
        assert_eq!(pick(20, 20, Method::Crop), SIZES[0]);
        assert_eq!(pick(50, 50, Method::Crop), SIZES[1]);
        assert_eq!(pick(100, 100, Method::Crop), SIZES[2]);
        assert_eq!(pick(50, 50, Method::Scale), SIZES[2]);
        assert_eq!(pick(700, 100, Method::Scale), SIZES[4]);
        assert_eq!(pick(5000, 5000, Method::Scale), SIZES[4]);
    }

    #[test]
    fn scale_fits_the_box_and_crop_fills_it() {
        let src = png(1000, 500);
        let t = generate(&src, pick(320, 240, Method::Scale)).unwrap();
        assert_eq!((t.width, t.height, t.content_type), (320, 160, "image/png"));
        let t = generate(&src, pick(96, 96, Method::Crop)).unwrap();
        assert_eq!((t.width, t.height), (96, 96));
        let decoded = image::load_from_memory(&t.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (96, 96));
        let t = generate(&jpeg(1600, 1200), pick(640, 480, Method::Scale)).unwrap();
        assert_eq!(
            (t.width, t.height, t.content_type),
            (640, 480, "image/jpeg")
        );
    }

    #[test]
    fn small_images_are_never_upscaled() {
        let t = generate(&png(40, 20), pick(320, 240, Method::Scale)).unwrap();
        assert_eq!((t.width, t.height), (40, 20));
        let t = generate(&png(40, 20), pick(96, 96, Method::Crop)).unwrap();
        assert_eq!((t.width, t.height), (20, 20));
    }

    #[test]
    fn garbage_and_bombs_are_refused() {
        assert!(matches!(
            generate(b"not an image at all", SIZES[0]),
            Err(MediaError::NotThumbnailable(_))
        ));
        // A valid PNG header that claims 100000 x 100000 pixels.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(generate(&bomb, SIZES[0]).is_err());
        let truncated = &png(64, 64)[..60];
        assert!(generate(truncated, SIZES[0]).is_err());
    }
}

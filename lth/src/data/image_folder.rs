//! Image-folder copies of CIFAR-10, the layout of fast.ai's `cifar10.tgz` and many others:
//! `train/<class>/<file>` and `test/<class>/<file>`, PNG or JPEG, possibly under one top folder.
//! Turns the files of such a copy (read from a folder or an archive by `copies`) into the
//! project's images. Every image must be 32x32 8-bit RGB and every class present with exactly
//! the expected count. Images come out in a fixed order, so one copy always gives the same
//! bytes, splits and runs: each class's files are ranked by name (byte order), then the classes
//! are interleaved in CIFAR-10's label order (the first file of every class, then the second…).
//! Interleaved, like the official batch files, because a scale's `train_subset` takes the first
//! training images: class by class, 600 of them would all be airplanes.

use super::RawImages;
use crate::base::error::{Error, Result};
use crate::base::spec::Codec;
use image::{DynamicImage, ImageFormat};
use rayon::prelude::*;
use std::path::PathBuf;

/// CIFAR-10's classes in label order (0-9), spelled as the copies name their folders.
pub const CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// The two split folders, in the order the images come out.
const SPLITS: [&str; 2] = ["train", "test"];

/// One file of a copy: its path inside the copy (`/`-separated) and its bytes.
pub struct Member {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Where a copy's files come from, for naming them in errors.
pub enum Origin {
    Folder(PathBuf),
    Archive(PathBuf),
}

/// Images per class that each split must hold (CIFAR-10: 5,000 and 1,000).
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub train: usize,
    pub test: usize,
}

/// A decoded copy: the training and test images, and whether any of them was a JPEG.
pub struct Decoded {
    pub train: RawImages,
    pub test: RawImages,
    pub codec: Codec,
}

impl Origin {
    /// The copy as a whole.
    pub fn whole(&self) -> String {
        match self {
            Origin::Folder(path) | Origin::Archive(path) => path.display().to_string(),
        }
    }

    /// One file of the copy.
    pub fn at(&self, member: &str) -> String {
        match self {
            Origin::Folder(path) => path.join(member).display().to_string(),
            Origin::Archive(path) => format!("{} member {member}", path.display()),
        }
    }

    fn error(&self, member: &str, problem: String, fix: &str) -> Error {
        Error::BadCopy { at: self.at(member), problem, fix: fix.into() }
    }
}

/// One image to decode: where it goes (split, class) and which member holds it.
struct Slot<'a> {
    /// The folder above the split folder ("" for none).
    top: &'a str,
    split: usize,
    class: usize,
    name: &'a str,
    member: &'a Member,
    format: ImageFormat,
}

/// Decodes a copy's members into training and test images, after checking its layout and
/// counts. Files outside `train/` and `test/` (a `labels.txt`, a README) are ignored.
pub fn decode(members: &[Member], counts: Counts, origin: &Origin) -> Result<Decoded> {
    let mut slots = Vec::new();
    let mut top: Option<&str> = None;
    for member in members {
        let Some(slot) = place(member, origin)? else {
            continue;
        };
        // Everything must sit under the same top folder (or none): two copies in one archive
        // would otherwise be merged.
        match top {
            None => top = Some(slot.top),
            Some(first) if first != slot.top => {
                let problem = format!("lies under `{}/` where the other images lie under `{first}/`", slot.top);
                return Err(origin.error(&member.path, problem, "give one copy at a time: a folder or archive with a single train/ and test/"));
            }
            Some(_) => {}
        }
        slots.push(slot);
    }
    slots.sort_by(|a, b| (a.split, a.class, a.name).cmp(&(b.split, b.class, b.name)));
    check_counts(&slots, counts, origin, top.unwrap_or(""))?;
    // Every class now holds its split's count, so the i-th image of a class has rank i % count.
    let rank = |i: usize, slot: &Slot| if slot.split == 0 { i % counts.train } else { (i - 10 * counts.train) % counts.test };
    let mut ranked: Vec<(usize, Slot)> = slots.into_iter().enumerate().map(|(i, slot)| (rank(i, &slot), slot)).collect();
    ranked.sort_by_key(|(rank, slot)| (slot.split, *rank, slot.class));
    let slots: Vec<Slot> = ranked.into_iter().map(|(_, slot)| slot).collect();
    let pixels: Vec<std::result::Result<Vec<u8>, String>> = slots.par_iter().map(|s| planes(&s.member.bytes, s.format)).collect();
    let mut sets = [
        RawImages { pixels: Vec::new(), labels: Vec::new(), n: 0, shape: [3, 32, 32] },
        RawImages { pixels: Vec::new(), labels: Vec::new(), n: 0, shape: [3, 32, 32] },
    ];
    for (slot, decoded) in slots.iter().zip(pixels) {
        let image = decoded.map_err(|problem| origin.error(&slot.member.path, problem, "replace it with the copy's original file, or fetch the copy again"))?;
        let set = &mut sets[slot.split];
        set.pixels.extend(image);
        set.labels.push(slot.class as u8);
        set.n += 1;
    }
    let codec = if slots.iter().any(|s| s.format == ImageFormat::Jpeg) { Codec::Jpeg } else { Codec::Png };
    let [train, test] = sets;
    Ok(Decoded { train, test, codec })
}

/// Where a member goes: `Some` for an image in `[top/]<split>/<class>/`, `None` for a file
/// outside the split folders, an error for anything else inside them.
fn place<'a>(member: &'a Member, origin: &Origin) -> Result<Option<Slot<'a>>> {
    let parts: Vec<&str> = member.path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let Some(at) = parts.iter().position(|p| SPLITS.contains(p)) else {
        return Ok(None);
    };
    let layout = "an image-folder copy holds [<top>/]train/<class>/<image> and [<top>/]test/<class>/<image>";
    if at > 1 || parts.len() != at + 3 {
        let problem = if at > 1 { "lies more than one folder deep above its split folder".to_string() } else { "is not inside a class folder".to_string() };
        return Err(origin.error(&member.path, problem, &format!("move or remove it: {layout}")));
    }
    let (class_name, name) = (parts[at + 1], parts[at + 2]);
    let Some(class) = CLASSES.iter().position(|c| *c == class_name) else {
        let problem = format!("`{class_name}` is not a CIFAR-10 class folder");
        return Err(origin.error(&member.path, problem, &format!("name the ten class folders exactly {}", CLASSES.join(", "))));
    };
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let format = match extension.as_str() {
        "png" => ImageFormat::Png,
        "jpg" | "jpeg" => ImageFormat::Jpeg,
        _ => {
            let fix = "remove it: class folders hold only .png, .jpg or .jpeg images";
            return Err(origin.error(&member.path, "is not a PNG or JPEG image (by its name)".into(), fix));
        }
    };
    let split = SPLITS.iter().position(|s| *s == parts[at]).unwrap_or(0);
    let top = if at == 1 { parts[0] } else { "" };
    Ok(Some(Slot { top, split, class, name, member, format }))
}

/// Every class of every split holds exactly its count; the first that does not is named.
fn check_counts(slots: &[Slot], counts: Counts, origin: &Origin, top: &str) -> Result<()> {
    let top = if top.is_empty() { String::new() } else { format!("{top}/") };
    for (split, name) in SPLITS.iter().enumerate() {
        let expected = if split == 0 { counts.train } else { counts.test };
        for (class, class_name) in CLASSES.iter().enumerate() {
            let n = slots.iter().filter(|s| s.split == split && s.class == class).count();
            let folder = format!("{top}{name}/{class_name}/");
            let problem = match n {
                0 => format!("has no {folder} folder (CIFAR-10 has ten classes: {})", CLASSES.join(", ")),
                n if n != expected => format!("{folder} holds {n} images where CIFAR-10 has {expected}"),
                _ => continue,
            };
            return Err(Error::BadCopy { at: origin.whole(), problem, fix: "use a complete copy of CIFAR-10".into() });
        }
    }
    Ok(())
}

/// One image as CIFAR-10 stores it: the red, green and blue planes of 32x32 bytes.
fn planes(bytes: &[u8], format: ImageFormat) -> std::result::Result<Vec<u8>, String> {
    let name = if format == ImageFormat::Png { "PNG" } else { "JPEG" };
    let image = image::load_from_memory_with_format(bytes, format).map_err(|e| format!("cannot be decoded as {name} ({e})"))?;
    let (width, height) = (image.width(), image.height());
    let rgb = match image {
        DynamicImage::ImageRgb8(rgb) if (width, height) == (32, 32) => rgb,
        other => return Err(format!("is a {width}x{height} {:?} image; CIFAR-10 images are 32x32 8-bit RGB", other.color())),
    };
    let interleaved = rgb.into_raw();
    Ok((0..3).flat_map(|channel| interleaved.iter().skip(channel).step_by(3).copied().collect::<Vec<_>>()).collect())
}

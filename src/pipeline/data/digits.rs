//! The embedded UCI handwritten digits.

use std::io::Read;

use super::{DataError, ImageDataset};

/// The UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak, 1998;
/// CC BY 4.0) as scikit-learn ships it: gzip CSV, 1,797 rows of 64 pixels (0..=16) and a label.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../../data/digits.csv.gz");

const DIGITS_ORIGIN: &str = "digits.csv.gz";
const DIGITS_SIDE: usize = 8;
const DIGITS_PIXELS: usize = DIGITS_SIDE * DIGITS_SIDE;
const DIGITS_MAX: u32 = 16;
const DIGITS_CLASSES: usize = 10;

/// The embedded digits data set: 1,797 images, 1 channel, 8×8, pixels `value / 16`, class
/// names `"0"..="9"`.
pub fn digits() -> Result<ImageDataset, DataError> {
    parse_digits_csv_gz(DIGITS_CSV_GZ)
}

/// Parses a gzip-compressed CSV in the digits format: per line 64 integer pixels `0..=16`
/// (8×8, row-major) then the label `0..=9`; any number of rows (at least one). Empty lines are
/// skipped; every other line must have exactly 65 fields.
pub fn parse_digits_csv_gz(bytes: &[u8]) -> Result<ImageDataset, DataError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|source| DataError::Gzip {
            origin: DIGITS_ORIGIN.to_string(),
            source,
        })?;

    let csv_err = |line: usize, reason: String| DataError::Csv {
        origin: DIGITS_ORIGIN.to_string(),
        line,
        reason,
    };
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let n_fields = line.split(',').count();
        if n_fields != DIGITS_PIXELS + 1 {
            return Err(csv_err(
                line_no,
                format!(
                    "expected {} comma-separated fields (64 pixels and a label), found {n_fields}",
                    DIGITS_PIXELS + 1
                ),
            ));
        }
        for (col, field) in line.split(',').enumerate() {
            let field = field.trim();
            let value: u32 = field.parse().map_err(|_| {
                csv_err(
                    line_no,
                    format!("field {}: {field:?} is not a non-negative integer", col + 1),
                )
            })?;
            if col < DIGITS_PIXELS {
                if value > DIGITS_MAX {
                    return Err(csv_err(
                        line_no,
                        format!(
                            "field {}: pixel value {value} is out of range 0..={DIGITS_MAX}",
                            col + 1
                        ),
                    ));
                }
                images.push(value as f32 / DIGITS_MAX as f32);
            } else {
                if value as usize >= DIGITS_CLASSES {
                    return Err(DataError::LabelOutOfRange {
                        origin: DIGITS_ORIGIN.to_string(),
                        record: line_no,
                        label: value,
                        n_classes: DIGITS_CLASSES,
                    });
                }
                labels.push(value);
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::EmptyDataset {
            what: DIGITS_ORIGIN.to_string(),
        });
    }
    Ok(ImageDataset {
        images,
        labels,
        channels: 1,
        height: DIGITS_SIDE,
        width: DIGITS_SIDE,
        class_names: (0..DIGITS_CLASSES).map(|k| k.to_string()).collect(),
    })
}

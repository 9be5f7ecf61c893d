//! Reading an ISO-BMFF (MP4, MOV, 3GP) file's box structure while it streams past: only
//! `ftyp` and `moov` are kept, and the facts the checks need are read from them.

use serde::Serialize;

/// The largest `moov` box kept for inspection.
const MAX_MOOV_BYTES: usize = 64 << 20;

/// Reads top-level ISO-BMFF boxes from a stream, keeping `ftyp` and `moov`.
#[derive(Debug, Default)]
pub(super) struct BoxScanner {
    pub(super) offset: u64,
    /// Where the current box ends; `None` while reading a header.
    pub(super) box_end: Option<u64>,
    pub(super) to_end: bool,
    pub(super) header: Vec<u8>,
    pub(super) capture: Option<([u8; 4], Vec<u8>)>,
    pub(super) ftyp: Option<Vec<u8>>,
    pub(super) moov: Option<Vec<u8>>,
    pub(super) mdat_seen: bool,
    pub(super) error: Option<String>,
}

impl BoxScanner {
    pub(super) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.error.is_none() {
            match self.box_end {
                Some(end) if self.to_end || self.offset < end => {
                    let n = if self.to_end {
                        data.len()
                    } else {
                        // In u64: on wasm32 a huge box must not wrap to 0 bytes.
                        (end - self.offset).min(data.len() as u64) as usize
                    };
                    if let Some((_, buf)) = &mut self.capture {
                        buf.extend_from_slice(&data[..n]);
                    }
                    self.offset += n as u64;
                    data = &data[n..];
                    if !self.to_end && self.offset == end {
                        self.close_box();
                    }
                }
                _ => {
                    let need = if self.header.len() >= 8
                        && u32::from_be_bytes(self.header[..4].try_into().expect("4")) == 1
                    {
                        16
                    } else {
                        8
                    };
                    let n = (need - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..n]);
                    self.offset += n as u64;
                    data = &data[n..];
                    if self.header.len() == need {
                        self.open_box();
                    }
                }
            }
        }
    }

    fn open_box(&mut self) {
        if self.header.len() == 8
            && u32::from_be_bytes(self.header[..4].try_into().expect("4")) == 1
        {
            return; // a 64-bit size follows
        }
        let kind: [u8; 4] = self.header[4..8].try_into().expect("4");
        let start = self.offset - self.header.len() as u64;
        let size = match u32::from_be_bytes(self.header[..4].try_into().expect("4")) {
            0 => None,
            1 => Some(u64::from_be_bytes(
                self.header[8..16].try_into().expect("8"),
            )),
            n => Some(u64::from(n)),
        };
        if start == 0 && &kind != b"ftyp" {
            self.error = Some("the file does not start with an ISO-BMFF ftyp box".into());
            return;
        }
        match size {
            Some(s) if s < self.header.len() as u64 => {
                self.error = Some(format!("box {} has an impossible size {s}", fourcc(&kind)));
                return;
            }
            Some(s) => match start.checked_add(s).filter(|end| *end <= 1 << 40) {
                Some(end) => self.box_end = Some(end),
                None => {
                    self.error = Some(format!("box {} has an impossible size {s}", fourcc(&kind)));
                    return;
                }
            },
            None => {
                self.to_end = true;
                self.box_end = Some(u64::MAX);
            }
        }
        if &kind == b"mdat" {
            self.mdat_seen = true;
        }
        let limit = match &kind {
            b"ftyp" => 4096,
            b"moov" => MAX_MOOV_BYTES,
            _ => 0,
        };
        if limit > 0 {
            let body = size.map_or(0, |s| s - self.header.len() as u64);
            if self.to_end || body > limit as u64 {
                self.error = Some(format!(
                    "the {} box is larger than {limit} bytes",
                    fourcc(&kind)
                ));
                return;
            }
            self.capture = Some((kind, Vec::with_capacity(body as usize)));
        }
        self.header.clear();
        if self.box_end == Some(self.offset) {
            self.close_box();
        }
    }

    fn close_box(&mut self) {
        if let Some((kind, buf)) = self.capture.take() {
            match &kind {
                b"ftyp" => self.ftyp = Some(buf),
                _ => self.moov = Some(buf),
            }
        }
        self.box_end = None;
    }

    /// The file ended: complete boxes only.
    pub(super) fn finish(&mut self) {
        if self.error.is_none()
            && (!self.header.is_empty() || (self.box_end.is_some() && !self.to_end))
        {
            self.error = Some("the file ends in the middle of a box (truncated?)".into());
        }
    }
}

pub(super) fn fourcc(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

/// What the header says about the video.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Facts {
    pub container: Option<String>,
    pub duration_seconds: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub codec: Option<String>,
}

/// Children of a box body.
pub(super) fn boxes(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let head = data.get(at..at + 8)?;
        let mut size = u32::from_be_bytes(head[..4].try_into().ok()?) as usize;
        let mut header = 8;
        if size == 1 {
            size = u64::from_be_bytes(data.get(at + 8..at + 16)?.try_into().ok()?) as usize;
            header = 16;
        } else if size == 0 {
            size = data.len() - at;
        }
        if size < header || at.checked_add(size)? > data.len() {
            return None;
        }
        let item = (&head[4..8], &data[at + header..at + size]);
        at += size;
        Some(item)
    })
}

pub(super) fn child<'a>(data: &'a [u8], kind: &[u8]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| *k == kind).map(|(_, b)| b)
}

pub(super) fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(super) fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads container, duration, size (display orientation) and codec from `ftyp` + `moov`.
pub(super) fn facts(ftyp: Option<&[u8]>, moov: Option<&[u8]>) -> Facts {
    let mut f = Facts::default();
    if let Some(ftyp) = ftyp {
        f.container = Some(match ftyp.get(..4) {
            Some(b"qt  ") => "mov".into(),
            Some(b) if b.starts_with(b"3g") => "3gp".into(),
            _ => "mp4".into(),
        });
    }
    let Some(moov) = moov else { return f };
    if let Some(mvhd) = child(moov, b"mvhd") {
        let (scale, units) = if mvhd.first() == Some(&1) {
            (be32(mvhd, 20), be64(mvhd, 24))
        } else {
            (be32(mvhd, 12), be32(mvhd, 16).map(u64::from))
        };
        if let (Some(scale), Some(units)) = (scale, units)
            && scale > 0
        {
            f.duration_seconds = Some(units as f64 / f64::from(scale));
        }
    }
    for (kind, trak) in boxes(moov) {
        if kind != b"trak" {
            continue;
        }
        let mdia = child(trak, b"mdia");
        let handler = mdia
            .and_then(|m| child(m, b"hdlr"))
            .and_then(|h| h.get(8..12));
        if handler != Some(b"vide") {
            continue;
        }
        if let Some(tkhd) = child(trak, b"tkhd") {
            let base = if tkhd.first() == Some(&1) { 52 } else { 40 };
            let (w, h) = (be32(tkhd, base + 36), be32(tkhd, base + 40));
            if let (Some(w), Some(h)) = (w, h) {
                let (mut w, mut h) = (w >> 16, h >> 16);
                // A 90° rotation in the matrix (a = d = 0): shown the other way round.
                if be32(tkhd, base) == Some(0) && be32(tkhd, base + 16) == Some(0) {
                    std::mem::swap(&mut w, &mut h);
                }
                f.width = Some(w);
                f.height = Some(h);
            }
        }
        f.codec = mdia
            .and_then(|m| child(m, b"minf"))
            .and_then(|m| child(m, b"stbl"))
            .and_then(|s| child(s, b"stsd"))
            .and_then(|s| s.get(12..16))
            .map(fourcc);
        break;
    }
    f
}

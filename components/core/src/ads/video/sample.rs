//! Small, valid ISO-BMFF files for tests and benchmarks: `ftyp`, `moov` (mvhd, one video
//! trak with tkhd, mdhd, hdlr and an `avc1` stsd) and an `mdat` of `media_bytes`.

fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

/// An MP4 of `width`×`height` lasting `seconds`, its `moov` first or last.
pub fn mp4(width: u32, height: u32, seconds: u32, media_bytes: usize, moov_first: bool) -> Vec<u8> {
    mp4_with_codec(width, height, seconds, media_bytes, moov_first, b"avc1")
}

pub fn mp4_with_codec(
    width: u32,
    height: u32,
    seconds: u32,
    media_bytes: usize,
    moov_first: bool,
    codec: &[u8; 4],
) -> Vec<u8> {
    let ftyp = bx(b"ftyp", b"isom\0\0\x02\0isomiso2avc1mp41");
    let mut mvhd = vec![0u8; 100];
    mvhd[12..16].copy_from_slice(&1000u32.to_be_bytes());
    mvhd[16..20].copy_from_slice(&(seconds * 1000).to_be_bytes());
    let mut tkhd = vec![0u8; 84];
    tkhd[40..44].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // matrix a = 1
    tkhd[56..60].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // matrix d = 1
    tkhd[76..80].copy_from_slice(&(width << 16).to_be_bytes());
    tkhd[80..84].copy_from_slice(&(height << 16).to_be_bytes());
    let mut hdlr = vec![0u8; 24];
    hdlr[8..12].copy_from_slice(b"vide");
    let mut stsd = vec![0u8; 8];
    stsd[4..8].copy_from_slice(&1u32.to_be_bytes());
    stsd.extend(bx(codec, &[0u8; 78]));
    let stbl = bx(b"stbl", &bx(b"stsd", &stsd));
    let minf = bx(b"minf", &stbl);
    let mdia = bx(
        b"mdia",
        &[bx(b"mdhd", &[0u8; 24]), bx(b"hdlr", &hdlr), minf].concat(),
    );
    let trak = bx(b"trak", &[bx(b"tkhd", &tkhd), mdia].concat());
    let moov = bx(b"moov", &[bx(b"mvhd", &mvhd), trak].concat());
    let media: Vec<u8> = (0..media_bytes).map(|i| (i * 31 % 251) as u8).collect();
    let mdat = bx(b"mdat", &media);
    if moov_first {
        [ftyp, moov, mdat].concat()
    } else {
        [ftyp, mdat, moov].concat()
    }
}

//! The box scanner, the spec checks and the streamed upload against a scripted TikTok.

use super::mp4::*;
use super::sample::mp4;
use super::spec::*;
use super::*;

fn scan(bytes: &[u8], piece: usize) -> BoxScanner {
    let mut s = BoxScanner::default();
    for chunk in bytes.chunks(piece) {
        s.feed(chunk);
    }
    s.finish();
    s
}

fn spec() -> Spec {
    Spec {
        max_bytes: MAX_VIDEO_BYTES,
        min_seconds: 5.0,
        max_seconds: 60.0,
        min_kbps: 516.0,
    }
}

#[test]
fn the_header_is_read_whatever_the_chunking_and_wherever_moov_is() {
    for moov_first in [true, false] {
        let file = mp4(1080, 1920, 15, 50_000, moov_first);
        for piece in [1, 7, 4096, file.len()] {
            let s = scan(&file, piece);
            assert_eq!(s.error, None, "piece {piece}");
            let f = facts(s.ftyp.as_deref(), s.moov.as_deref());
            assert_eq!(
                f,
                Facts {
                    container: Some("mp4".into()),
                    duration_seconds: Some(15.0),
                    width: Some(1080),
                    height: Some(1920),
                    codec: Some("avc1".into()),
                },
                "piece {piece}, moov first {moov_first}"
            );
        }
    }
}

#[test]
fn broken_files_are_named() {
    let file = mp4(1080, 1920, 15, 1000, true);
    assert!(
        scan(&file[..file.len() - 10], 100)
            .error
            .unwrap()
            .contains("truncated")
    );
    assert!(
        scan(b"RIFF\0\0\0\0AVI LIST", 4)
            .error
            .unwrap()
            .contains("ftyp")
    );
    let mut bad = file.clone();
    bad[..4].copy_from_slice(&3u32.to_be_bytes());
    assert!(scan(&bad, 64).error.unwrap().contains("impossible size"));
    assert_eq!(sniff_other(b"RIFF\0\0\0\0AVI LIST"), "an AVI file");
    assert_eq!(sniff_other(b"hello"), "not a video container");
}

#[test]
fn hostile_box_sizes_end_the_scan_without_panic_or_spin() {
    let ftyp = &mp4(1080, 1920, 10, 10, true)[..28];
    for size in [u64::MAX, (1u64 << 32) + 16] {
        let mut file = ftyp.to_vec();
        file.extend_from_slice(&1u32.to_be_bytes());
        file.extend_from_slice(b"mdat");
        file.extend_from_slice(&size.to_be_bytes());
        file.extend_from_slice(&[0u8; 100]);
        let s = scan(&file, 7);
        // Either refused as impossible, or the file ends inside the box.
        assert!(s.error.is_some(), "size {size}");
    }
}

#[test]
fn a_rotated_track_is_measured_as_shown() {
    let mut file = mp4(1920, 1080, 10, 10, true);
    // Rotate 90°: a = d = 0, b = 1, c = -1.
    let tkhd = file.windows(4).position(|w| w == b"tkhd").unwrap() + 4;
    file[tkhd + 40..tkhd + 44].copy_from_slice(&0u32.to_be_bytes());
    file[tkhd + 44..tkhd + 48].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    file[tkhd + 52..tkhd + 56].copy_from_slice(&0xFFFF_0000u32.to_be_bytes());
    file[tkhd + 56..tkhd + 60].copy_from_slice(&0u32.to_be_bytes());
    let s = scan(&file, 512);
    let f = facts(s.ftyp.as_deref(), s.moov.as_deref());
    assert_eq!((f.width, f.height), (Some(1080), Some(1920)));
}

fn failing(f: &Facts, size: u64) -> Vec<&'static str> {
    checks(f, Some(size), &spec())
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| c.check)
        .collect()
}

#[test]
fn the_spec_limits_are_checked() {
    let good = Facts {
        container: Some("mp4".into()),
        duration_seconds: Some(15.0),
        width: Some(1080),
        height: Some(1920),
        codec: Some("avc1".into()),
    };
    let mb = 1 << 20;
    assert!(failing(&good, 5 * mb).is_empty());
    let with = |f: &dyn Fn(&mut Facts)| {
        let mut x = good.clone();
        f(&mut x);
        x
    };
    assert_eq!(
        failing(&with(&|f| f.duration_seconds = Some(4.9)), 5 * mb),
        vec!["duration"]
    );
    assert_eq!(
        failing(&with(&|f| f.duration_seconds = Some(61.0)), 5 * mb),
        vec!["duration"]
    );
    assert_eq!(
        failing(&with(&|f| f.width = Some(1000)), 5 * mb),
        vec!["aspect_ratio"]
    );
    assert_eq!(
        failing(
            &with(&|f| (f.width, f.height) = (Some(360), Some(640))),
            5 * mb
        ),
        vec!["resolution"]
    );
    assert!(
        failing(
            &with(&|f| (f.width, f.height) = (Some(640), Some(640))),
            5 * mb
        )
        .is_empty()
    );
    assert!(
        failing(
            &with(&|f| (f.width, f.height) = (Some(1280), Some(720))),
            5 * mb
        )
        .is_empty()
    );
    assert_eq!(
        failing(&with(&|f| f.codec = Some("vp09".into())), 5 * mb),
        vec!["codec"]
    );
    // 15 s at 516 kbps is 967,500 bytes.
    assert_eq!(failing(&good, 967_000), vec!["bitrate"]);
    assert!(failing(&good, 968_000).is_empty());
    assert_eq!(failing(&good, MAX_VIDEO_BYTES + 1), vec!["size"]);
    assert_eq!(
        failing(&Facts::default(), 1),
        vec!["container", "video_track", "duration"]
    );
}

mod upload {
    use super::super::sample::mp4;
    use super::super::upload::*;
    use super::super::*;
    use crate::ApiError;
    use crate::tenancy::advertiser_access::AdvertiserAccess;
    use crate::tenancy::connections::testing::advertiser_access;
    use crate::testing::TestEnv;
    use crate::tiktok::client::fake::{err, ok};
    use serde_json::{Value, json};

    fn setup() -> (TestEnv, AdvertiserAccess) {
        let t = TestEnv::new();
        let access = advertiser_access(&t, "acme");
        (t, access)
    }

    fn request(len: usize) -> UploadRequest {
        UploadRequest {
            file_name: "clip.mp4".into(),
            content_length: Some(len as u64),
        }
    }

    /// Uploads `file` as a body read from memory, with its length declared.
    fn upload_whole(
        t: &TestEnv,
        access: &AdvertiserAccess,
        file: &[u8],
    ) -> Result<(u16, Value), ApiError> {
        upload(&t.env(), access, &request(file.len()), &mut &file[..])
    }

    #[test]
    fn a_good_file_is_sent_with_its_md5_after_it_and_polled_until_ready() {
        let (t, access) = setup();
        let file = mp4(1080, 1920, 10, 700_000, false);
        t.script(vec![
            ok(json!([{"video_id": "v1"}])),
            err(40901, "transcoding"),
            ok(json!({"list": [{"video_id": "v1", "width": 1080}]})),
        ]);
        let (status, body) = upload_whole(&t, &access, &file).unwrap();
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "ready");
        assert_eq!(body["video"]["width"], 1080);
        let sent = t.tiktok.sent.borrow();
        let form = &sent[0].body;
        let text = String::from_utf8_lossy(form);
        let md5 = crate::platform::multipart::md5_hex(&file);
        assert_eq!(body["video_signature"], md5.as_str());
        let file_at = form
            .windows(file.len())
            .position(|w| w == file.as_slice())
            .expect("the file, whole, in the form");
        let sig_at = text.find("name=\"video_signature\"").unwrap();
        assert!(sig_at > file_at, "the signature follows the file");
        assert!(text.contains(&md5));
        assert_eq!(
            t.tiktok.slept.borrow().len(),
            1,
            "one wait while transcoding"
        );
    }

    #[test]
    fn a_failing_faststart_file_is_refused_before_any_call_and_a_failing_moov_last_file_is_never_completed()
     {
        for moov_first in [true, false] {
            let (t, access) = setup();
            let file = mp4(1080, 1920, 4, 400_000, moov_first);
            let (status, body) = upload_whole(&t, &access, &file).unwrap();
            assert_eq!(status, 422, "{body}");
            assert_eq!(body["error"]["code"], "video_rejected");
            let failed: Vec<&str> = body["checks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["ok"] == false)
                .map(|c| c["check"].as_str().unwrap())
                .collect();
            assert_eq!(failed, vec!["duration"], "moov first: {moov_first}");
            assert!(
                t.tiktok.sent.borrow().is_empty(),
                "TikTok never got a whole request"
            );
        }
    }

    /// A body cut off after `good` bytes.
    struct CutOff(Vec<u8>, usize);

    impl std::io::Read for CutOff {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1 >= self.0.len() {
                return Err(std::io::Error::other("the client went away"));
            }
            let n = buf.len().min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn a_body_cut_off_is_a_400_and_never_a_complete_upload() {
        for (moov_first, keep) in [(true, 10), (false, 300_000)] {
            let (t, access) = setup();
            let file = mp4(1080, 1920, 10, 700_000, moov_first);
            let mut reader = CutOff(file[..keep].to_vec(), 0);
            let e = upload(&t.env(), &access, &request(file.len()), &mut reader).unwrap_err();
            assert_eq!(e.status(), 400, "{e}");
            assert!(e.to_string().contains("went away"), "{e}");
            assert!(t.tiktok.sent.borrow().is_empty());
        }
    }

    #[test]
    fn a_file_read_whole_in_the_look_ahead_is_still_checked_before_it_completes() {
        let (t, access) = setup();
        // An ftyp box and nothing else: no moov, no media.
        let file = mp4(1080, 1920, 10, 10, true)[..28].to_vec();
        let (status, body) = upload_whole(&t, &access, &file).unwrap();
        assert_eq!(status, 422, "{body}");
        assert!(t.tiktok.sent.borrow().is_empty(), "no complete upload");
        // A short good file also read whole ahead: still signed and closed.
        let file = mp4(640, 640, 6, 400_000, true);
        t.script(vec![
            ok(json!([{"video_id": "v2"}])),
            ok(json!({"list": [{"video_id": "v2"}]})),
        ]);
        let (status, _) = upload_whole(&t, &access, &file).unwrap();
        assert_eq!(status, 201);
        let sent = t.tiktok.sent.borrow();
        let text = String::from_utf8_lossy(&sent[0].body);
        assert!(text.contains("name=\"video_signature\"") && text.trim_end().ends_with("--"));
    }

    #[test]
    fn files_that_are_not_iso_bmff_or_too_big_are_named() {
        let (t, access) = setup();
        let avi = b"RIFF\0\0\0\0AVI LIST and more bytes".to_vec();
        let (status, body) =
            upload(&t.env(), &access, &request(avi.len()), &mut avi.as_slice()).unwrap();
        assert_eq!(status, 422);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("an AVI file"),
            "{body}"
        );
        let (status, _) = upload(
            &t.env(),
            &access,
            &request(MAX_VIDEO_BYTES as usize + 1),
            &mut &b""[..],
        )
        .unwrap();
        assert_eq!(status, 422);
        let e = upload(&t.env(), &access, &request(0), &mut &b""[..]).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(t.tiktok.sent.borrow().is_empty());
    }
}

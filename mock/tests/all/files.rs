//! Multipart uploads in the mock: ad videos and custom audiences (tiktok-api.md §5.1, §5.3).

use md5::{Digest, Md5};
use serde_json::{Value, json};
use tiktok_mock::{MockConfig, MockServer};

fn md5_hex(b: &[u8]) -> String {
    Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// A tiny ISO-BMFF file: ftyp, then moov with mvhd (15 s) and one trak/tkhd (1080x1920).
fn mp4() -> Vec<u8> {
    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }
    let mut mvhd = vec![0u8; 100];
    mvhd[12..16].copy_from_slice(&1000u32.to_be_bytes());
    mvhd[16..20].copy_from_slice(&15_000u32.to_be_bytes());
    let mut tkhd = vec![0u8; 84];
    tkhd[76..80].copy_from_slice(&(1080u32 << 16).to_be_bytes());
    tkhd[80..84].copy_from_slice(&(1920u32 << 16).to_be_bytes());
    let trak = boxed(b"trak", &boxed(b"tkhd", &tkhd));
    let moov = boxed(b"moov", &[boxed(b"mvhd", &mvhd), trak].concat());
    [boxed(b"ftyp", b"isom\0\0\x02\0isomiso2"), moov].concat()
}

async fn setup() -> (MockServer, String, String) {
    let m = MockServer::start(MockConfig {
        qps_per_endpoint: None,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let advertiser = m.mock.demo_advertiser().id;
    let token = m.mock.token_for(std::slice::from_ref(&advertiser));
    (m, advertiser, token)
}

async fn upload(m: &MockServer, token: &str, path: &str, form: reqwest::multipart::Form) -> Value {
    reqwest::Client::new()
        .post(format!("{}/open_api/v1.3{path}", m.url()))
        .header("Access-Token", token)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn videos_are_checked_then_transcode_then_ready() {
    let (m, advertiser, token) = setup().await;
    let file = mp4();
    let form = |sig: String, bytes: Vec<u8>| {
        reqwest::multipart::Form::new()
            .text("advertiser_id", advertiser.clone())
            .text("video_signature", sig)
            .part(
                "video_file",
                reqwest::multipart::Part::bytes(bytes).file_name("ad.mp4"),
            )
    };
    let v = upload(
        &m,
        &token,
        "/file/video/ad/upload/",
        form(md5_hex(&file), file.clone()),
    )
    .await;
    assert_eq!(v["code"], 0, "{v}");
    let video = &v["data"][0];
    assert_eq!(
        (
            video["format"].as_str(),
            video["duration"].as_f64(),
            video["width"].as_u64(),
            video["height"].as_u64()
        ),
        (Some("mp4"), Some(15.0), Some(1080), Some(1920))
    );
    let id = video["video_id"].as_str().unwrap().to_string();

    let info = || async {
        let r = reqwest::Client::new()
            .get(format!("{}/open_api/v1.3/file/video/ad/info/", m.url()))
            .header("Access-Token", &token)
            .query(&[
                ("advertiser_id", advertiser.clone()),
                ("video_ids", json!([id]).to_string()),
            ])
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()
    };
    assert_eq!(info().await["code"], 40901, "transcoding at first");
    reqwest::Client::new()
        .post(format!("{}/_mock/clock", m.url()))
        .json(&json!({"advance_seconds": 3}))
        .send()
        .await
        .unwrap();
    let ready = info().await;
    assert_eq!(ready["code"], 0);
    assert_eq!(ready["data"]["list"][0]["signature"], md5_hex(&file));

    assert_eq!(
        upload(
            &m,
            &token,
            "/file/video/ad/upload/",
            form("0".repeat(32), file.clone())
        )
        .await["code"],
        40900
    );
    let text = b"not a video at all".to_vec();
    assert_eq!(
        upload(
            &m,
            &token,
            "/file/video/ad/upload/",
            form(md5_hex(&text), text)
        )
        .await["code"],
        40908
    );
    let not_multipart: Value = reqwest::Client::new()
        .post(format!("{}/open_api/v1.3/file/video/ad/upload/", m.url()))
        .header("Access-Token", &token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(not_multipart["code"], 40002);
}

#[tokio::test]
async fn audiences_from_files_and_lookalikes_of_big_enough_sources() {
    let (m, advertiser, token) = setup().await;
    let file_form = |rows: usize| {
        let body: String = (0..rows).map(|i| format!("{:064x}\n", i)).collect();
        reqwest::multipart::Form::new()
            .text("advertiser_id", advertiser.clone())
            .text("calculate_type", "EMAIL_SHA256")
            .text("file_signature", md5_hex(body.as_bytes()))
            .part(
                "file",
                reqwest::multipart::Part::bytes(body.into_bytes()).file_name("emails.csv"),
            )
    };
    let post = |path: &'static str, body: Value| {
        let (m, token) = (&m, &token);
        async move {
            reqwest::Client::new()
                .post(format!("{}/open_api/v1.3{path}", m.url()))
                .header("Access-Token", token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mut audiences = Vec::new();
    for rows in [150, 50] {
        let up = upload(
            &m,
            &token,
            "/dmp/custom_audience/file/upload/",
            file_form(rows),
        )
        .await;
        assert_eq!(up["code"], 0, "{up}");
        let created = post("/dmp/custom_audience/create/", json!({"advertiser_id": advertiser, "custom_audience_name": format!("a{rows}"), "calculate_type": "EMAIL_SHA256", "file_paths": [up["data"]["file_path"]]})).await;
        assert_eq!(created["code"], 0, "{created}");
        audiences.push(
            created["data"]["custom_audience_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let lookalike = |source: &str, locations: Value| json!({"advertiser_id": advertiser, "custom_audience_name": "lal", "lookalike_spec": {"source_audience_id": source, "location_ids": locations, "audience_size": "BALANCED"}});
    let ok = post(
        "/dmp/custom_audience/lookalike/create/",
        lookalike(&audiences[0], json!(["6252001"])),
    )
    .await;
    assert_eq!(ok["code"], 0, "{ok}");
    let small = post(
        "/dmp/custom_audience/lookalike/create/",
        lookalike(&audiences[1], json!(["6252001"])),
    )
    .await;
    assert!(
        small["message"]
            .as_str()
            .unwrap()
            .contains("at least 100 members"),
        "{small}"
    );
    let of_lookalike = post(
        "/dmp/custom_audience/lookalike/create/",
        lookalike(
            ok["data"]["custom_audience_id"].as_str().unwrap(),
            json!(["6252001"]),
        ),
    )
    .await;
    assert!(
        of_lookalike["message"]
            .as_str()
            .unwrap()
            .contains("cannot be a source"),
        "{of_lookalike}"
    );
    assert_eq!(
        post(
            "/dmp/custom_audience/lookalike/create/",
            lookalike(&audiences[0], json!([]))
        )
        .await["code"],
        40002
    );

    let list: Value = reqwest::Client::new()
        .get(format!(
            "{}/open_api/v1.3/dmp/custom_audience/list/",
            m.url()
        ))
        .header("Access-Token", &token)
        .query(&[("advertiser_id", &advertiser)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"]["page_info"]["total_number"], 3);
    assert_eq!(list["data"]["list"][0]["cover_num"], 150);

    let wrong_type = reqwest::multipart::Form::new()
        .text("advertiser_id", advertiser.clone())
        .text("calculate_type", "EMAIL_SHA256")
        .text("file_signature", md5_hex(b"x"))
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("emails.xlsx"),
        );
    assert_eq!(
        upload(&m, &token, "/dmp/custom_audience/file/upload/", wrong_type).await["code"],
        40908
    );
}

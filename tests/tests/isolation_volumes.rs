//! `-v` for VM-backed runs (hosted: QEMU, TCG here): a read-only directory volume is readable
//! (and not writable), an ext4 image file is attached read-write and the guest's writes are on
//! it afterwards (read with debugfs), and bad values (read-write directory, missing host path,
//! relative guest path, too many volumes) fail before any VM starts, leaving nothing behind.
//! The microVM level attaches the same disks through PUT /drives (same agent code).

mod isolation_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use isolation_common::{command, records_of, text, wait_output, Level};

fn run(flags: &[&str], cmd: &[&str]) -> (std::process::Output, usize) {
    let mut c = command(Level::Hosted, flags, cmd);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let out = wait_output(child, Duration::from_secs(180));
    (out, records_of(pid).len())
}

fn ext4_image(dir: &std::path::Path) -> std::path::PathBuf {
    let img = dir.join("rw.ext4");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(16 << 20).unwrap();
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    img
}

#[test]
fn ro_directory_and_rw_image_volumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "from-the-host\n").unwrap();
    let img = ext4_image(tmp.path());
    let ro = format!("{}:/data:ro", data.display());
    let rw = format!("{}:/out", img.display());
    let script = "cat /data/hello.txt; touch /data/x 2>/dev/null && echo data-writable; \
                  echo written-in-guest > /out/result.txt && echo ok";
    let (out, left) = run(&["-v", &ro, "-v", &rw], &["sh", "-c", script]);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "from-the-host\nok\n");
    assert_eq!(left, 0);
    let got = Command::new("debugfs")
        .args(["-R", "cat /result.txt"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(
        text(&got.stdout),
        "written-in-guest\n",
        "{}",
        text(&got.stderr)
    );
    // The directory itself is untouched (its image was a copy).
    assert!(!data.join("x").exists());
}

#[test]
fn bad_volumes_fail_before_any_vm() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display().to_string();
    let many: Vec<String> = (0..9).map(|i| format!("{d}:/v{i}:ro")).collect();
    let mut many_flags = Vec::new();
    for v in &many {
        many_flags.extend(["-v", v.as_str()]);
    }
    let rw_dir = format!("{d}:/data");
    let missing = format!("{d}/nope:/data:ro");
    let relative = format!("{d}:data:ro");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["-v", &rw_dir],
            vec![&rw_dir, "add :ro", "ext4 image file"],
        ),
        (vec!["-v", &missing], vec![&missing, "must exist"]),
        (vec!["-v", &relative], vec![&relative, "must be absolute"]),
        (many_flags.clone(), vec!["at most 8"]),
    ];
    for (flags, wants) in cases {
        let (out, left) = run(&flags, &["true"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {err}");
        for w in wants {
            assert!(err.contains(w), "{flags:?}: want {w:?} in {err}");
        }
        assert_eq!(left, 0);
        assert!(!err.contains("QEMU"), "{err}");
    }
}

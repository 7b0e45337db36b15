//! The committed `include/ringbroker.h` is exactly what cbindgen makes of this crate.
//! `RINGBROKER_BLESS=1 cargo test -p ringbroker-ffi --test header` rewrites it.

use std::path::PathBuf;

#[test]
fn the_committed_header_is_the_generated_one() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("config");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let header = crate_dir.join("../include/ringbroker.h");
    if std::env::var_os("RINGBROKER_BLESS").is_some() {
        std::fs::create_dir_all(header.parent().expect("parent")).expect("include/");
        std::fs::write(&header, &generated).expect("write header");
        return;
    }
    let committed = std::fs::read(&header).unwrap_or_default();
    assert!(
        committed == generated,
        "include/ringbroker.h differs from what ffi/src generates: run \
         RINGBROKER_BLESS=1 cargo test -p ringbroker-ffi --test header and commit it"
    );
}

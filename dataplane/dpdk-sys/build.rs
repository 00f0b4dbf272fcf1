//! Compiles the C shim against the system DPDK (pkg-config `libdpdk`)
//! when the `link` feature asks for it.

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_LINK").is_none() {
        return;
    }
    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .cargo_metadata(true)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "DPDK 22.11 not found with pkg-config ({e}); install it with `apt-get install libdpdk-dev` (Debian 12)"
        ),
    };
    let mut build = cc::Build::new();
    build
        .file("src/shim.c")
        .flag("-include")
        .flag("rte_config.h");
    for dir in &dpdk.include_paths {
        build.include(dir);
    }
    build.flag_if_supported("-march=corei7");
    build.warnings(true).compile("ugdpdk_shim");
    // The ring PMD's constructor for back-to-back ports is a library call.
    println!("cargo:rustc-link-lib=rte_net_ring");
}

//! shmcache is Linux only (robust process-shared pthread mutexes, /dev/shm,
//! fallocate): a build for any other target stops here with one sentence
//! instead of a wall of compiler errors from the OS layer.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        println!(
            "cargo::error=shmcache supports Linux only (it needs robust process-shared mutexes and /dev/shm), \
             and this build targets {os}."
        );
    }
}

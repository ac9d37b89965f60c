//! `switchboard`: thin over the library (see `lib.rs`).

/// jemalloc, the maintained `tikv-jemallocator`, with transparent huge pages for its
/// arenas and metadata (fewer TLB misses with millions of connections' state). The
/// environment variable jemalloc reads here is `_RJEM_MALLOC_CONF` (plain `MALLOC_CONF`
/// is ignored); `[process] huge_pages = false` sets it to turn THP off. (Linux: FreeBSD's
/// own malloc is jemalloc.)
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options (a C string read at start; the environment overrides).
#[cfg(target_os = "linux")]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 31] = b"thp:always,metadata_thp:always\0";

fn main() -> std::process::ExitCode {
    switchboard::cli::main()
}

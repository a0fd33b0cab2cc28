//! What `Config::load` checks against the machine it runs on (`Config::from_str` stays
//! pure): the memory tier's arena, which io_uring registration pins page by page, must fit
//! in the machine's memory. A larger one either fails late, or pins the machine's memory
//! for tens of seconds before the kernel's out-of-memory killer picks a victim.
//!
//! `RLIMIT_MEMLOCK` is not checked: the arena is not `mlock`ed, and a ring that may not pin
//! it (not root, a small limit) falls back to unregistered memory with a warning, which
//! works, only with a copy more per send.

use crate::bytesize::ByteSize;
use crate::schema::CacheConfig;

/// `MemTotal` from `/proc/meminfo`, in bytes; `None` when it cannot be read.
pub fn mem_total() -> Option<u64> {
    parse_mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => kib.checked_mul(1024),
        Some(_) => None,
    }
}

/// Whether the memory tier `cache` asks for fits in `mem_total` bytes; why not, in words
/// that name the numbers.
pub fn memory_fits(cache: &CacheConfig, mem_total: u64) -> Result<(), String> {
    let arena = cache.arena_bytes();
    if arena <= mem_total {
        return Ok(());
    }
    Err(format!(
        "{} (an arena of {} with its headroom) is more than this machine's memory \
         (MemTotal {}); about {} fits",
        ByteSize(cache.memory_bytes),
        ByteSize(arena),
        ByteSize(mem_total),
        ByteSize((mem_total / 9 * 8) & !((1 << 20) - 1)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:       24683772 kB\nMemFree: 1 kB\n";
        assert_eq!(parse_mem_total(text), Some(24683772 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots\n"), None);
        assert!(mem_total().is_some_and(|t| t > 0));
    }

    #[test]
    fn the_arena_with_its_headroom_must_fit() {
        let gib = 1u64 << 30;
        let cache = |memory_bytes| CacheConfig {
            memory_bytes,
            ..CacheConfig::default()
        };
        assert!(memory_fits(&cache(8 * gib), 9 * gib).is_ok());
        let e = memory_fits(&cache(8 * gib + 1), 9 * gib).unwrap_err();
        assert!(e.contains("MemTotal 9 GiB"), "{e}");
        assert!(memory_fits(&cache(gib << 10), 24 * gib).is_err());
    }
}

//! What the broker's structures really take from the allocator, for the
//! byte bounds of the subscription tree, the retained store and the slot
//! tables (each checked against a counting allocator in `server/tests/`).

/// The heap a `malloc` of the glibc kind (the server's allocator on Linux)
/// takes for `size` bytes: the size with an 8-byte header, rounded up to
/// 16, at least 32; nothing for 0 (no allocation).
pub fn block(size: usize) -> usize {
    if size == 0 {
        return 0;
    }
    (size.saturating_add(8 + 15) & !15).max(32)
}

/// The heap of a `CompactString` of `len` bytes: none up to 24 (kept
/// inline), at least 32 bytes beyond.
pub fn compact_heap(len: usize) -> usize {
    if len <= 24 {
        0
    } else {
        block(len.max(32))
    }
}

/// The control bytes a hash table adds after its places (SSE2 groups).
pub(super) const GROUP_WIDTH: usize = 16;

/// The heap of a hash table of `T`s that has room for `capacity`.
pub(super) fn table_heap<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    // hashbrown: up to 7 entries in capacity + 1 places, then 7/8 of them.
    let places = if capacity < 8 {
        capacity + 1
    } else {
        (capacity / 7).saturating_mul(8)
    };
    let data = places
        .saturating_mul(std::mem::size_of::<T>())
        .saturating_add(15)
        & !15;
    block(data.saturating_add(places).saturating_add(GROUP_WIDTH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_blocks_have_a_header_a_16_byte_step_and_a_floor_of_32() {
        assert_eq!(block(0), 0);
        assert_eq!(block(1), 32);
        assert_eq!(block(24), 32);
        assert_eq!(block(25), 48);
        assert_eq!(compact_heap(24), 0);
        assert_eq!(compact_heap(25), 48);
    }
}

//! The request headers as Envoy serializes them (proxy-wasm's header-map pairs), fetched with
//! one hostcall and searched in place. The SDK's `get_map_bytes` copies every header into a
//! `String` and a `Vec` first: two allocations per header on every request, on the 402 path
//! for headers it never reads.

use proxy_wasm::types::{MapType, Status};

/// One request's headers: Envoy's serialized map plus the filter's own edits (removals and
/// replacements since the fetch), which win over the map.
#[derive(Debug, Default)]
pub struct Headers {
    raw: Vec<u8>,
    edits: Vec<(String, Option<Vec<u8>>)>,
}

impl Headers {
    /// The request headers (none if the host cannot give them).
    pub fn fetch() -> Headers {
        Headers {
            raw: fetch_raw(MapType::HttpRequestHeaders).unwrap_or_default(),
            edits: Vec::new(),
        }
    }

    #[cfg(test)]
    fn from_raw(raw: Vec<u8>) -> Headers {
        Headers {
            raw,
            edits: Vec::new(),
        }
    }

    /// The value of header `name` (any case): the last edit of it, else its first occurrence.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match self
            .edits
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => v.as_deref(),
            None => find(&self.raw, name),
        }
    }

    /// Records that `name` now has `value` (`None`: removed).
    pub fn edit(&mut self, name: &str, value: Option<&[u8]>) {
        self.edits
            .push((name.to_owned(), value.map(<[u8]>::to_vec)));
    }
}

/// The value of `name` in a serialized map: a little-endian `u32` count, then a (name length,
/// value length) pair of `u32`s per entry, then each name and value followed by a NUL. A
/// malformed map finds nothing.
fn find<'a>(raw: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = raw.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    let mut at = count.checked_mul(8)?.checked_add(4)?;
    for i in 0..count {
        let (n_len, v_len) = (u32_at(4 + i * 8)?, u32_at(8 + i * 8)?);
        let n = raw.get(at..at.checked_add(n_len)?)?;
        let v_at = at + n_len + 1;
        let v = raw.get(v_at..v_at.checked_add(v_len)?)?;
        if n.eq_ignore_ascii_case(name.as_bytes()) {
            return Some(v);
        }
        at = v_at + v_len + 1;
    }
    None
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// The serialized map, owned: the host allocated it through the SDK's
/// `proxy_on_memory_allocate` (a `Vec` of that capacity), exactly as the SDK's own
/// `get_map_bytes` takes it back.
fn fetch_raw(map: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the hostcall writes a pointer to `size` bytes the module allocated for it (or
    // null), which from here on only this `Vec` owns.
    unsafe {
        match proxy_get_header_map_pairs(map, &mut data, &mut size) {
            Status::Ok if !data.is_null() => Some(Vec::from_raw_parts(data, size, size)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serialization proxy-wasm hosts use (and the SDK's `set_map` writes).
    fn serialize(map: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = (map.len() as u32).to_le_bytes().to_vec();
        for (n, v) in map {
            out.extend((n.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (n, v) in map {
            out.extend(n.as_bytes());
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn finds_headers_in_envoys_serialization_and_honours_edits() {
        let raw = serialize(&[
            (":path", b"/paid/x"),
            ("cookie", b""),
            ("x-a", b"first"),
            ("x-a", b"second"),
            ("payment-signature", b"\xffbinary\x00"),
        ]);
        let mut h = Headers::from_raw(raw);
        assert_eq!(h.get(":path"), Some(&b"/paid/x"[..]));
        assert_eq!(h.get("Cookie"), Some(&b""[..]));
        assert_eq!(h.get("x-a"), Some(&b"first"[..]));
        assert_eq!(h.get("PAYMENT-SIGNATURE"), Some(&b"\xffbinary\x00"[..]));
        assert_eq!(h.get("x-b"), None);
        assert_eq!(h.get(":pat"), None);
        h.edit("X-A", None);
        assert_eq!(h.get("x-a"), None);
        h.edit("x-a", Some(b"mine"));
        assert_eq!(h.get("x-a"), Some(&b"mine"[..]));
        assert_eq!(h.get(":path"), Some(&b"/paid/x"[..]));
    }

    #[test]
    fn a_truncated_or_lying_map_finds_nothing_and_never_panics() {
        let raw = serialize(&[(":path", b"/a"), ("x-b", b"bb")]);
        for cut in 0..raw.len() {
            let h = Headers::from_raw(raw[..cut].to_vec());
            // Whatever is found is a real value of the map, never bytes from elsewhere.
            assert!(matches!(h.get("x-b"), None | Some(b"bb")));
            assert!(matches!(h.get(":path"), None | Some(b"/a")));
        }
        let mut lying = raw.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Headers::from_raw(lying).get("x-none"), None);
        let mut long = raw;
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Headers::from_raw(long).get("x-b"), None);
        assert_eq!(Headers::default().get(":path"), None);
    }
}

//! Copying to the system clipboard through the terminal (OSC 52).
//!
//! OSC 52 asks the terminal emulator to set the clipboard, so copying works over SSH and without
//! a clipboard daemon or a native dependency. Terminals that do not support it ignore the
//! sequence; there is no reply to wait for, so the UI can only say that it *asked*.

/// Standard base64 (RFC 4648 §4) with padding. OSC 52 carries its payload this way; a
/// dependency for a dozen lines is not worth it.
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// The escape sequence that asks the terminal to put `data` on the clipboard (`c` selection),
/// terminated by BEL, which more terminals accept than ST.
pub fn osc52(data: &[u8]) -> String {
    format!("\x1b]52;c;{}\x07", base64_encode(data))
}

/// The bytes of a path as the user's tools will want to paste them. On Unix this is exact, even
/// for names that are not UTF-8; elsewhere a lossless conversion is not possible in general.
pub fn path_bytes(path: &std::path::Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64_encode(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn binary_and_high_bytes() {
        assert_eq!(base64_encode(&[0xff, 0xfe, 0xfd]), "//79");
        assert_eq!(base64_encode(&[0, 0, 0]), "AAAA");
        assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
        assert_eq!(
            base64_encode("/home/ana/notes/café.md".as_bytes()),
            "L2hvbWUvYW5hL25vdGVzL2NhZsOpLm1k"
        );
    }

    #[test]
    fn osc52_sequence() {
        assert_eq!(osc52(b"foo"), "\x1b]52;c;Zm9v\x07");
        // The payload is base64, so a hostile file name cannot smuggle in a terminator.
        let seq = osc52(b"\x07\x1b]0;x\x07");
        assert_eq!(seq.matches('\x07').count(), 1);
        assert_eq!(seq.matches('\x1b').count(), 1);
    }

    #[test]
    fn path_bytes_roundtrip() {
        assert_eq!(path_bytes(std::path::Path::new("/a/b c.md")), b"/a/b c.md");
    }
}

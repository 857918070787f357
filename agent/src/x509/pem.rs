//! PEM armour, read leniently the way OpenSSL reads it (text outside blocks
//! is ignored) but strictly about the blocks themselves: a BEGIN without
//! its matching END is reported, never silently dropped.

/// A PEM block as found in the text.
pub struct Block<'a> {
    pub label: &'a str,
    /// The base64 lines between BEGIN and END, joined.
    pub body: String,
}

pub enum PemScan<'a> {
    Blocks(Vec<Block<'a>>),
    /// A BEGIN without its END: the label, and the 1-based position of the block.
    Truncated {
        label: &'a str,
        position: usize,
    },
}

pub fn scan_pem(text: &str) -> PemScan<'_> {
    let mut blocks = Vec::new();
    let mut open: Option<(&str, String)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if let Some((prev, _)) = open {
                return PemScan::Truncated {
                    label: prev,
                    position: blocks.len() + 1,
                };
            }
            open = Some((label, String::new()));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            match open.take() {
                Some((begin, body)) if begin == label => blocks.push(Block { label: begin, body }),
                Some((begin, _)) => {
                    return PemScan::Truncated {
                        label: begin,
                        position: blocks.len() + 1,
                    }
                }
                // A stray END line is text outside any block, which PEM ignores.
                None => {}
            }
        } else if let Some((_, body)) = open.as_mut() {
            body.push_str(line);
        }
    }
    match open {
        Some((label, _)) => PemScan::Truncated {
            label,
            position: blocks.len() + 1,
        },
        None => PemScan::Blocks(blocks),
    }
}

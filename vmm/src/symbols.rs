//! Kernel symbol lookup from a `System.map`, to name sampled RIPs.

use std::path::Path;

/// Sorted (address, name) pairs of text symbols.
pub struct SymbolMap {
    syms: Vec<(u64, String)>,
}

impl SymbolMap {
    /// Parses `System.map` lines "ADDR TYPE NAME", keeping text symbols (t/T/w/W).
    pub fn load(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    fn parse(text: &str) -> Self {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let kind = it.next()?;
                let name = it.next()?;
                matches!(kind, "t" | "T" | "w" | "W").then(|| (addr, name.to_string()))
            })
            .collect();
        syms.sort();
        Self { syms }
    }

    /// "name+0xoff" for `addr`, if a symbol precedes it.
    pub fn describe(&self, addr: u64) -> Option<String> {
        let i = self.syms.partition_point(|(a, _)| *a <= addr);
        let (base, name) = self.syms.get(i.checked_sub(1)?)?;
        Some(format!("{name}+{:#x}", addr - base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_preceding_text_symbol() {
        let m = SymbolMap::parse(
            "ffffffff81000000 T _text\nffffffff81000100 t foo\nffffffff81000200 D data\nffffffff81000300 T bar\n",
        );
        assert_eq!(m.describe(0xffffffff81000150).as_deref(), Some("foo+0x50"));
        assert_eq!(m.describe(0xffffffff81000250).as_deref(), Some("foo+0x150"));
        assert_eq!(m.describe(0xffffffff81000300).as_deref(), Some("bar+0x0"));
        assert_eq!(m.describe(0x1000), None);
    }
}

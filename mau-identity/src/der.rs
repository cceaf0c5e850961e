//! The little DER (X.690) this crate needs: writing a certificate and reading
//! one back. Only single-byte tags and definite lengths up to 4 bytes.

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const OID: u8 = 0x06;
pub(crate) const BOOLEAN: u8 = 0x01;
pub(crate) const UTC_TIME: u8 = 0x17;
pub(crate) const GENERALIZED_TIME: u8 = 0x18;

/// Encodes one TLV.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = (n as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes a TLV whose content is the concatenation of `parts`.
pub(crate) fn tlv_of(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

/// A DER reader over a byte slice.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

/// One parsed TLV.
#[derive(Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    /// The whole encoding, header included.
    pub raw: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// Reads the next TLV.
    pub(crate) fn read(&mut self) -> Result<Tlv<'a>, String> {
        let d = self.data;
        let (&tag, rest) = d.split_first().ok_or("unexpected end of data")?;
        if tag & 0x1f == 0x1f {
            return Err("multi-byte tags are not supported".into());
        }
        let (&first, rest) = rest.split_first().ok_or("missing length")?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return Err("bad length".into());
            }
            let mut len = 0usize;
            for b in &rest[..n] {
                len = (len << 8) | *b as usize;
            }
            if len < 0x80 || rest[0] == 0 {
                return Err("non-minimal length".into());
            }
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err("length exceeds data".into());
        }
        let header = d.len() - rest.len();
        let raw = &d[..header + len];
        self.data = &rest[len..];
        Ok(Tlv {
            tag,
            content: &rest[..len],
            raw,
        })
    }

    /// Reads the next TLV and checks its tag.
    pub(crate) fn expect(&mut self, tag: u8) -> Result<Tlv<'a>, String> {
        let t = self.read()?;
        if t.tag != tag {
            return Err(format!("expected tag {tag:#04x}, found {:#04x}", t.tag));
        }
        Ok(t)
    }

    /// Checks that nothing is left.
    pub(crate) fn finish(&self) -> Result<(), String> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err("trailing data".into())
        }
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Civil date of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `t + years` calendar years, normalised like Go's `time.AddDate`
/// (29 February into a non-leap year becomes 1 March).
pub(crate) fn add_years(t: u64, years: i64) -> u64 {
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    let (y, m, d) = civil_from_days(days);
    // days_from_civil normalises an out-of-range day like Go does.
    let new_days = days_from_civil(y + years, m, 1) + d as i64 - 1;
    (new_days as u64) * 86400 + secs
}

/// Encodes a time as RFC 5280 wants: UTCTime up to 2049, GeneralizedTime after.
pub(crate) fn encode_time(t: u64) -> Vec<u8> {
    let (y, mo, d) = civil_from_days((t / 86400) as i64);
    let s = t % 86400;
    let (h, mi, se) = (s / 3600, (s / 60) % 60, s % 60);
    if (1950..2050).contains(&y) {
        let text = format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{se:02}Z", y % 100);
        tlv(UTC_TIME, text.as_bytes())
    } else {
        let text = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{se:02}Z");
        tlv(GENERALIZED_TIME, text.as_bytes())
    }
}

/// Decodes a UTCTime or GeneralizedTime (Z form, whole seconds) to Unix seconds.
pub(crate) fn decode_time(t: &Tlv<'_>) -> Result<u64, String> {
    let text = std::str::from_utf8(t.content).map_err(|_| "time is not ASCII")?;
    let digits = text.strip_suffix('Z').ok_or("time must end in Z")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("time has non-digits".into());
    }
    let num = |s: &str| -> u32 { s.parse().unwrap_or(0) };
    let (y, rest) = match (t.tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = num(&digits[..2]) as i64;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (num(&digits[..4]) as i64, &digits[4..]),
        _ => return Err("unsupported time format".into()),
    };
    let (mo, d, h, mi, s) = (
        num(&rest[..2]),
        num(&rest[2..4]),
        num(&rest[4..6]),
        num(&rest[6..8]),
        num(&rest[8..10]),
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return Err("time out of range".into());
    }
    let days = days_from_civil(y, mo, d);
    if days < 0 {
        return Err("time before 1970".into());
    }
    Ok(days as u64 * 86400 + h as u64 * 3600 + mi as u64 * 60 + s as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for z in [-1000i64, 0, 1, 365, 10957, 19000, 47482, 60000, 100_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    #[test]
    fn add_years_like_go() {
        // 2000-02-29 + 100 years = 2100-03-01 (2100 is not a leap year).
        let t = days_from_civil(2000, 2, 29) as u64 * 86400 + 5;
        assert_eq!(
            add_years(t, 100),
            days_from_civil(2100, 3, 1) as u64 * 86400 + 5
        );
        let t = days_from_civil(2024, 6, 15) as u64 * 86400 + 3661;
        assert_eq!(
            add_years(t, 100),
            days_from_civil(2124, 6, 15) as u64 * 86400 + 3661
        );
    }

    #[test]
    fn time_round_trip() {
        for t in [
            0u64,
            1_700_000_000,
            2_524_608_000,
            4_102_444_800,
            4_900_000_000,
        ] {
            let enc = encode_time(t);
            let tlv = Reader::new(&enc).read().unwrap();
            assert_eq!(decode_time(&tlv).unwrap(), t);
        }
    }

    #[test]
    fn long_lengths() {
        let content = vec![7u8; 300];
        let enc = tlv(OCTET_STRING, &content);
        assert_eq!(&enc[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let mut r = Reader::new(&enc);
        let t = r.read().unwrap();
        assert_eq!(t.content, &content[..]);
        assert!(r.is_empty());
    }
}

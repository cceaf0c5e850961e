//! Plain-text tables for terminals.

/// Prints rows under a header, columns padded to their widest cell.
pub fn print(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        crate::output::outln!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The routing table's peers, as `mau peers list` and `mau devnet` show them.
pub fn print_peers(peers: &[mau_net::control::PeerInfo]) {
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.fingerprint.to_string(),
                p.address.to_string(),
                p.bucket.to_string(),
                crate::server::age(p.last_seen_secs),
                p.failures.to_string(),
            ]
        })
        .collect();
    print(
        &["FINGERPRINT", "ADDRESS", "BUCKET", "SEEN", "FAILURES"],
        &rows,
    );
}

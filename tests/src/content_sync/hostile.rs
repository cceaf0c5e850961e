//! Hostile friends (issue 16).
